//! Link settings of the shared library that apps rely on: its name inside the file (ELF
//! SONAME, Mach-O install name), so that programs linked against it, and Android's loader,
//! look for `libtern.so` / `@rpath/libtern.dylib` rather than the path it was linked from;
//! and on Android, 16 KB page alignment, which Android 15 devices with 16 KB pages require.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    match os.as_str() {
        "linux" => println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtern.so"),
        "android" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtern.so");
            println!("cargo:rustc-cdylib-link-arg=-Wl,-z,max-page-size=16384");
        }
        "macos" | "ios" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libtern.dylib")
        }
        _ => {}
    }
}
