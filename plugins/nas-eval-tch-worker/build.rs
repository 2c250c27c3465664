//! Links libtorch so that the worker runs without `LD_LIBRARY_PATH`: an rpath
//! to the libtorch directory torch-sys found, and `--no-as-needed -ltorch` so
//! that libtorch_cuda stays linked and CUDA is seen on a GPU machine. Builds
//! `csrc/shim.cpp` (the CUDA allocator's peak statistics, bfloat16 autocast) against that
//! libtorch's headers.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath={dir}");
        let include = std::path::Path::new(&dir).join("../include");
        println!("cargo:rerun-if-changed=csrc/shim.cpp");
        cc::Build::new()
            .cpp(true)
            .file("csrc/shim.cpp")
            .include(&include)
            .flag_if_supported("-std=c++17")
            .flag_if_supported("-w")
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            .compile("nas_torch_shim");
        println!("cargo:rustc-link-arg-bins=-lc10");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg-bins=-ltorch");
}
