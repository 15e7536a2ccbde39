//! One logging shim: to `defmt`, to `log`, or to nothing. Arguments are
//! plain values (no `{:?}` of foreign types), so both backends take them;
//! with neither, the arguments are evaluated and dropped (no unused
//! warnings, and the optimiser removes them).
#![allow(unused_macros)]

macro_rules! debug {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::debug!($($arg)*);
        #[cfg(feature = "defmt")]
        ::defmt::debug!($($arg)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($($arg)*,);
    }};
}

macro_rules! warn {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::warn!($($arg)*);
        #[cfg(feature = "defmt")]
        ::defmt::warn!($($arg)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($($arg)*,);
    }};
}
