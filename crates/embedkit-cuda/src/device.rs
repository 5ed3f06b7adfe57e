//! `--device cpu|auto|cuda[:N]`: where a model runs, as the command line, the server and the Python package
//! spell it.

use std::fmt;
use std::str::FromStr;

/// The storage type of weights and activations on the GPU. Arithmetic is f32 in every case (GEMM
/// accumulation, LayerNorm statistics, softmax).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE half: tensor-core GEMMs; cosine to f32 ≥ 0.999 predicted by the CPU emulation.
    #[default]
    F16,
    /// bfloat16: tensor-core GEMMs, f32's range with 8 bits of mantissa.
    BF16,
    /// f32 GEMMs without TF32: the CPU's numbers to float rounding, at a fraction of the speed.
    F32,
}

impl DType {
    /// The suffix of the kernels for this type (`embed_ln_f16`, …).
    pub fn suffix(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
        }
    }

    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// One CUDA device and the storage type to run on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CudaDevice {
    /// The device's ordinal (`cuda:N`).
    pub ordinal: usize,
    /// Storage type (`cuda:N+bf16`); f16 when not given.
    pub dtype: DType,
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU backend (the default).
    #[default]
    Cpu,
    /// A CUDA device; loading fails with a one-line error when there is no driver or no such device.
    Cuda(CudaDevice),
    /// The CUDA device when one can be used, else the CPU.
    Auto(CudaDevice),
}

impl FromStr for Device {
    type Err = String;

    /// `cpu`, `auto`, `cuda`, `cuda:N`; `cuda` and `auto` take a storage type after `+` (`cuda:1+bf16`,
    /// `auto+f32`), f16 by default.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage =
            "expected cpu, auto or cuda[:N], optionally +f16, +bf16 or +f32 after cuda/auto";
        let (base, dtype) = match s.split_once('+') {
            Some((base, d)) => (
                base,
                match d {
                    "f16" | "fp16" => DType::F16,
                    "bf16" => DType::BF16,
                    "f32" | "fp32" => DType::F32,
                    other => {
                        return Err(format!(
                            "unknown GPU type '{other}' in device '{s}': {usage}"
                        ));
                    }
                },
            ),
            None => (s, DType::default()),
        };
        let (name, ordinal) = match base.split_once(':') {
            Some((name, n)) => (
                name,
                n.parse::<usize>()
                    .map_err(|_| format!("device '{s}': '{n}' is not a device number; {usage}"))?,
            ),
            None => (base, 0),
        };
        let cuda = CudaDevice { ordinal, dtype };
        match name {
            "cpu" if base == "cpu" && s == "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(cuda)),
            "auto" if !base.contains(':') => Ok(Device::Auto(cuda)),
            _ => Err(format!("unknown device '{s}': {usage}")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => write!(f, "cuda:{}+{}", d.ordinal, d.dtype),
            Device::Auto(d) => write!(f, "auto+{}", d.dtype),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let cuda = |ordinal, dtype| CudaDevice { ordinal, dtype };
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(cuda(0, DType::F16))));
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(cuda(3, DType::F16))));
        assert_eq!(
            "cuda:1+bf16".parse(),
            Ok(Device::Cuda(cuda(1, DType::BF16)))
        );
        assert_eq!("cuda+f32".parse(), Ok(Device::Cuda(cuda(0, DType::F32))));
        assert_eq!("auto".parse(), Ok(Device::Auto(cuda(0, DType::F16))));
        assert_eq!("auto+f32".parse(), Ok(Device::Auto(cuda(0, DType::F32))));
    }

    #[test]
    fn rejects_with_the_reason() {
        for bad in [
            "gpu", "cuda:x", "cuda:-1", "cpu:0", "cpu+f16", "auto:1", "cuda+f8", "",
        ] {
            let err = bad.parse::<Device>().unwrap_err();
            assert!(err.contains("expected cpu, auto or cuda"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["cpu", "cuda:2+bf16", "auto+f32"] {
            let d: Device = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Device>(), Ok(d));
        }
    }
}
