//! Every kernel compiles through NVRTC for sm_80, sm_86, sm_89 and sm_90 — no GPU needed, only libnvrtc
//! (scripts/test installs the PyPI wheel nvidia-cuda-nvrtc and puts its lib folder on LD_LIBRARY_PATH).
//! Without NVRTC the test says so and passes, except under CI (`CI` or `EMBEDKIT_REQUIRE_NVRTC` set, as
//! scripts/test does), where it fails.

use embedkit_cuda::kernels::{self, KERNELS, TEST_ARCHS};

fn nvrtc_or_skip() -> bool {
    if kernels::nvrtc_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("EMBEDKIT_REQUIRE_NVRTC").is_none(),
        "CI (or EMBEDKIT_REQUIRE_NVRTC) is set but libnvrtc cannot be loaded: scripts/test installs \
         nvidia-cuda-nvrtc into .venv-ci and sets LD_LIBRARY_PATH to its lib folder"
    );
    eprintln!(
        "skipped: libnvrtc not found (set LD_LIBRARY_PATH to the nvidia-cuda-nvrtc wheel's lib folder)"
    );
    false
}

/// The CUBIN is an ELF file for the requested SM, and every kernel of every type is a symbol in it.
#[test]
fn every_kernel_compiles_for_every_architecture() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = kernels::nvrtc_version().unwrap();
    eprintln!("NVRTC {major}.{minor}");
    for (ma, mi) in TEST_ARCHS {
        let compiled = kernels::compile(ma, mi).unwrap_or_else(|e| panic!("{e}"));
        let cubin = &compiled.cubin;
        assert_eq!(&cubin[..4], b"\x7fELF", "sm_{ma}{mi}: not an ELF image");
        // CUDA cubins carry the SM version in the ELF header's e_flags: bits 8..16 since CUDA 12.x's new
        // layout (0x5a for sm_90), the low byte before.
        let flags = u32::from_le_bytes([cubin[48], cubin[49], cubin[50], cubin[51]]);
        let sm = ma * 10 + mi;
        assert!(
            (flags >> 8) & 0xff == sm || flags & 0xff == sm,
            "sm_{ma}{mi}: the CUBIN is for another architecture (e_flags {flags:#x})"
        );
        for k in KERNELS {
            for ty in ["f32", "f16", "bf16"] {
                let name = format!("{k}_{ty}\0");
                assert!(
                    cubin.windows(name.len()).any(|w| w == name.as_bytes()),
                    "sm_{ma}{mi}: kernel {k}_{ty} missing from the CUBIN"
                );
            }
        }
        assert!(
            compiled.log.is_empty() || !compiled.log.contains("error"),
            "sm_{ma}{mi}: {}",
            compiled.log
        );
        eprintln!(
            "sm_{ma}{mi}: {} bytes of CUBIN, e_flags {flags:#x}, log {:?}",
            cubin.len(),
            compiled.log
        );
    }
}

/// A second load of the same architecture reads the cache file instead of compiling; a different
/// architecture gets its own file.
#[test]
fn compiled_kernels_are_cached_per_architecture() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("embedkit-cuda-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let first = kernels::load_or_compile(Some(&dir), 8, 6).unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let path = files[0].path();
    // Overwrite the cached file: a second load must return these bytes, proving it read the cache.
    std::fs::write(&path, b"cached").unwrap();
    assert_eq!(
        kernels::load_or_compile(Some(&dir), 8, 6).unwrap(),
        b"cached"
    );
    assert!(!first.is_empty());
    kernels::load_or_compile(Some(&dir), 9, 0).unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A compile error surfaces as NVRTC's log, naming the file and line.
#[test]
fn the_source_is_one_program_with_file_markers() {
    let src = kernels::source();
    for f in ["common.cuh", "embed.cu", "attention.cu", "pool.cu"] {
        assert!(src.contains(&format!("#line 1 \"{f}\"")), "{f}");
    }
}
