//! Returning freed heap memory to the operating system.
//!
//! glibc keeps freed memory inside the process: after the large, short-lived allocations of
//! parsing a big configuration or of a first poll cycle over thousands of secrets, the resident
//! size would stay at its peak. [`trim`] asks the allocator to give the free pages back; it is
//! called after start-up and after the per-secret metrics are re-rendered.

/// Gives free heap pages back to the OS (glibc only; a no-op elsewhere).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases memory the allocator already considers free; it
        // takes no pointer and cannot invalidate live allocations.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
