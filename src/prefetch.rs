//! Software prefetch, for batched lookups: a hint that starts loading a
//! line into the cache, so that several lookups' misses overlap.

/// Starts loading the cache line holding `at` (nothing where unsupported,
/// and under miri). Never faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch<T>(at: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch is a hint: it reads no memory architecturally and
    // never faults, even for an invalid address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = at;
}
