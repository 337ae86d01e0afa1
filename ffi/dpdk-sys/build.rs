//! Generates bindings against the system DPDK (found with pkg-config) and
//! compiles the C shim that exports DPDK's static-inline fast-path functions.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .expect("pkg-config not found: install it (apt-get install pkg-config)");
    if !out.status.success() {
        panic!(
            "pkg-config cannot find libdpdk (install libdpdk-dev, DPDK >= 22.11): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Split on whitespace but keep `-include rte_config.h` as two args.
    String::from_utf8(out.stdout)
        .expect("pkg-config output is not UTF-8")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    // The pkg-config crate keeps only -I/-D; DPDK also needs `-include
    // rte_config.h` and `-march=...`, so the raw flags go to both compilers.
    let cflags = pkg_config(&["--cflags"]);
    let version = pkg_config(&["--modversion"]);
    if let Some(v) = version.first() {
        let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        if (major, minor) < (22, 11) {
            panic!("DPDK {v} is too old: Sluice needs DPDK >= 22.11");
        }
    }

    // Link the shared libraries: EAL then sees a shared build and loads every
    // PMD (null, ring, pcap, af_packet, memif, tap, PCI drivers) from its
    // driver directory at start.
    let libs = pkg_config(&["--libs"]);
    for flag in &libs {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }

    let mut build = cc::Build::new();
    build.file("shim/shim.c").opt_level(3).warnings(false);
    let mut i = 0;
    while i < cflags.len() {
        if cflags[i] == "-include" && i + 1 < cflags.len() {
            build.flag("-include").flag(&cflags[i + 1]);
            i += 2;
            continue;
        }
        build.flag(&cflags[i]);
        i += 1;
    }
    build.compile("sluice_dpdk_shim");

    let mut clang_args = cflags.clone();
    clang_args.push("-DALLOW_EXPERIMENTAL_API".to_string());
    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&clang_args)
        .allowlist_function("rte_.*|sluice_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|RING_F_.*")
        // Packed + aligned structs from rte_flow.h break the generated Rust.
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_gtp_.*")
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .clang_macro_fallback()
        .prepend_enum_name(false)
        .generate()
        .expect("bindgen failed on DPDK headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("cannot write bindings");
}
