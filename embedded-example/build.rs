//! Puts the memory layout of the QEMU machine for the target being built
//! where cortex-m-rt's `link.x` looks for `memory.x`.

use std::path::PathBuf;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let layout = if target.starts_with("thumbv6m") {
        "memory/microbit.x"
    } else {
        "memory/mps2-an386.x"
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy(layout, out.join("memory.x")).expect("the layout file exists");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={layout}");
    // The microbit has 16 KiB of RAM, the mps2-an386 4 MiB.
    println!("cargo::rustc-check-cfg=cfg(small_ram)");
    if target.starts_with("thumbv6m") {
        println!("cargo::rustc-cfg=small_ram");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
