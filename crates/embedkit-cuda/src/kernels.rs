//! The kernels' CUDA C source (kernels/*.cu, embedded at build time) and its compilation by NVRTC into a
//! binary for one GPU architecture, cached on disk.
//!
//! NVRTC needs no GPU: the tests compile every kernel for sm_80, sm_86, sm_89 and sm_90 on any machine that
//! has libnvrtc (the PyPI wheel `nvidia-cuda-nvrtc`, which `scripts/test` installs).

use crate::CudaError;
use cudarc::nvrtc::sys;
use sha2::{Digest, Sha256};
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};

/// The source files in the order they are concatenated into one program (NVRTC has no file system here:
/// `common.cuh` is prepended instead of #included).
const FILES: [(&str, &str); 7] = [
    ("common.cuh", include_str!("../kernels/common.cuh")),
    ("embed.cu", include_str!("../kernels/embed.cu")),
    ("layernorm.cu", include_str!("../kernels/layernorm.cu")),
    ("activation.cu", include_str!("../kernels/activation.cu")),
    ("attention.cu", include_str!("../kernels/attention.cu")),
    ("pool.cu", include_str!("../kernels/pool.cu")),
    ("convert.cu", include_str!("../kernels/convert.cu")),
];

/// Every kernel, without its type suffix; each exists as `NAME_f32`, `NAME_f16` and `NAME_bf16`.
pub const KERNELS: [&str; 7] = [
    "embed_ln",
    "add_ln",
    "bias_act",
    "attention",
    "pool",
    "from_f32",
    "to_f32",
];

/// The architectures the tests compile for: Ampere (A100, A10/3090), Ada (L4/4090) and Hopper (H100/H200).
pub const TEST_ARCHS: [(u32, u32); 4] = [(8, 0), (8, 6), (8, 9), (9, 0)];

/// The whole program: all files concatenated, each preceded by a `#line` so NVRTC's messages name it.
pub fn source() -> String {
    let mut src = String::new();
    for (name, text) in FILES {
        src.push_str(&format!("#line 1 \"{name}\"\n"));
        src.push_str(text);
        src.push('\n');
    }
    src
}

/// Whether libnvrtc can be opened (without the panic cudarc raises on first use when it cannot).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library by its usual names.
    unsafe { sys::is_culib_present() }
}

fn require_nvrtc() -> Result<(), CudaError> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(CudaError::MissingLibrary {
            library: "libnvrtc.so",
            hint: "NVRTC: the CUDA toolkit, or `pip install nvidia-cuda-nvrtc` with its lib folder on LD_LIBRARY_PATH",
        })
    }
}

/// NVRTC's version (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-parameters.
    let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(status, "version query").map(|_| (major, minor))
}

fn check(status: sys::nvrtcResult, what: &str) -> Result<(), CudaError> {
    if status == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Compile {
            arch: String::new(),
            log: format!("{what}: {status:?}"),
        })
    }
}

/// The options the kernels are compiled with (IEEE division and square root, no fast math: the exact GELU's
/// erf and the softmax's exp must be the accurate ones).
pub fn options(major: u32, minor: u32) -> Vec<String> {
    vec![
        format!("-arch=sm_{major}{minor}"),
        "--std=c++17".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--fmad=true".into(),
    ]
}

/// A compiled program: CUBIN (machine code for exactly one architecture), loadable by the driver.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The CUBIN image.
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings), usually empty.
    pub log: String,
}

/// Compiles the whole program for `sm_{major}{minor}` into CUBIN.
pub fn compile(major: u32, minor: u32) -> Result<Compiled, CudaError> {
    require_nvrtc()?;
    let arch = format!("sm_{major}{minor}");
    let fail = |log: String| CudaError::Compile {
        arch: arch.clone(),
        log,
    };
    let src = CString::new(source()).map_err(|_| fail("source holds a NUL byte".into()))?;
    let opts: Vec<CString> = options(major, minor)
        .into_iter()
        .map(|o| CString::new(o).expect("options hold no NUL"))
        .collect();
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: the program is created from NUL-terminated strings that outlive the calls, and destroyed
    // below on every path.
    unsafe {
        let status = sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            c"embedkit.cu".as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        );
        if status != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(fail(format!("nvrtcCreateProgram: {status:?}")));
        }
        let compiled = sys::nvrtcCompileProgram(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
        let log = program_log(prog);
        let result = if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
            Err(fail(if log.is_empty() {
                format!("{compiled:?}")
            } else {
                log
            }))
        } else {
            let mut size = 0usize;
            let status = sys::nvrtcGetCUBINSize(prog, &mut size);
            if status != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                Err(fail(format!(
                    "no CUBIN produced ({status:?}, {size} bytes)"
                )))
            } else {
                let mut cubin = vec![0u8; size];
                let status = sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char);
                if status != sys::nvrtcResult::NVRTC_SUCCESS {
                    Err(fail(format!("nvrtcGetCUBIN: {status:?}")))
                } else {
                    Ok(Compiled { cubin, log })
                }
            }
        };
        sys::nvrtcDestroyProgram(&mut prog);
        result
    }
}

/// # Safety
/// `prog` must be a live program.
unsafe fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: per the caller.
    unsafe {
        if sys::nvrtcGetProgramLogSize(prog, &mut size) != sys::nvrtcResult::NVRTC_SUCCESS
            || size <= 1
        {
            return String::new();
        }
        let mut buf = vec![0 as c_char; size];
        if sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr()) != sys::nvrtcResult::NVRTC_SUCCESS {
            return String::new();
        }
        CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .trim()
            .to_string()
    }
}

/// The cache file of the program for one architecture and NVRTC version: a change to any kernel source, the
/// options, the target or the compiler makes a new name.
pub fn cache_file(dir: &Path, major: u32, minor: u32, nvrtc: (i32, i32)) -> PathBuf {
    let mut h = Sha256::new();
    h.update(source().as_bytes());
    h.update(options(major, minor).join(" ").as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!(
        "kernels-{hex}-sm_{major}{minor}-nvrtc{}.{}.cubin",
        nvrtc.0, nvrtc.1
    ))
}

/// The program for `sm_{major}{minor}`: read from `cache_dir` if compiled before, else compiled and written
/// there (temp file + rename, so concurrent processes never read half a file). No cache dir: compile.
pub fn load_or_compile(
    cache_dir: Option<&Path>,
    major: u32,
    minor: u32,
) -> Result<Vec<u8>, CudaError> {
    let Some(dir) = cache_dir else {
        return compile(major, minor).map(|c| c.cubin);
    };
    let path = cache_file(dir, major, minor, nvrtc_version()?);
    if let Ok(bytes) = std::fs::read(&path)
        && !bytes.is_empty()
    {
        return Ok(bytes);
    }
    let cubin = compile(major, minor)?.cubin;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| CudaError::Cache {
            path: p,
            message: e.to_string(),
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    embedkit_core::write_atomic(&path, &cubin).map_err(io(&path))?;
    Ok(cubin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_exported_in_three_types() {
        let src = source();
        for k in KERNELS {
            // EK_EXPORT(name, …) makes name_f32, name_f16 and name_bf16.
            assert!(
                src.contains(&format!("EK_EXPORT({k},")),
                "{k} is not exported"
            );
        }
        assert!(
            !src.contains("#include"),
            "NVRTC from the wheel has no CUDA headers"
        );
    }

    #[test]
    fn cache_names_differ_by_arch_and_compiler() {
        let d = Path::new("/x");
        let a = cache_file(d, 9, 0, (13, 0));
        assert_ne!(a, cache_file(d, 8, 0, (13, 0)));
        assert_ne!(a, cache_file(d, 9, 0, (13, 1)));
        assert_eq!(a, cache_file(d, 9, 0, (13, 0)));
        assert!(a.to_string_lossy().ends_with("-sm_90-nvrtc13.0.cubin"));
    }
}
