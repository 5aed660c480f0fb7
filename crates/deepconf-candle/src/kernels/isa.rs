//! The instruction-set token that selects the kernels.
//!
//! The x86 kernels are `#[target_feature]` functions: calling one on a CPU without those features
//! is undefined behaviour. [`Isa`] is the proof that the check was made: its field is private to
//! this module, and the only ways to get a value are [`Isa::detect`], [`Isa::available`] (both
//! ask the CPU first) and [`Isa::SCALAR`] (portable code, always safe). Code anywhere else in the
//! crate can hold, copy and pass an `Isa`, but cannot invent one, so the `unsafe` dispatch in the
//! kernels is sound whoever calls it.

/// Environment variable that caps the kernels' instruction set (`scalar`, `avx2`), to compare
/// paths or to work around a CPU-specific problem.
pub(crate) const KERNELS_ENV: &str = "DEEPCONF_KERNELS";

/// The kernel family to run. Only [`Isa::kind`] hands these out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IsaKind {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA: `vpmaddubsw` + `vpmaddwd` per 32-byte dot.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 (F, BW, DQ, VL) with VNNI: one `vpdpbusd` per 64-byte dot, two blocks at a time.
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

/// A kernel family that this CPU was checked to support (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Isa(IsaKind);

impl Isa {
    /// The portable kernels, which every CPU runs.
    #[cfg(test)]
    pub(crate) const SCALAR: Isa = Isa(IsaKind::Scalar);

    /// Which kernels to run.
    pub(crate) fn kind(self) -> IsaKind {
        self.0
    }

    /// The kernels the crate uses: the best this CPU has, capped by `DEEPCONF_KERNELS`
    /// (read once per process).
    pub(crate) fn detect() -> Isa {
        static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let best = best();
            Isa(match std::env::var(KERNELS_ENV).as_deref() {
                Ok("scalar") => IsaKind::Scalar,
                #[cfg(target_arch = "x86_64")]
                Ok("avx2") if best == IsaKind::Vnni => IsaKind::Avx2,
                _ => best,
            })
        })
    }

    /// Every kernel family this CPU can run, for tests that compare them.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut all = vec![Isa(IsaKind::Scalar)];
        #[cfg(target_arch = "x86_64")]
        match best() {
            IsaKind::Vnni => all.extend([Isa(IsaKind::Avx2), Isa(IsaKind::Vnni)]),
            IsaKind::Avx2 => all.push(Isa(IsaKind::Avx2)),
            IsaKind::Scalar => {}
        }
        all
    }
}

/// The best kernel family this CPU has.
fn best() -> IsaKind {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            if has!("avx512f")
                && has!("avx512bw")
                && has!("avx512dq")
                && has!("avx512vl")
                && has!("avx512vnni")
            {
                return IsaKind::Vnni;
            }
            return IsaKind::Avx2;
        }
    }
    IsaKind::Scalar
}
