//! Links libtorch so that the worker runs without `LD_LIBRARY_PATH`: an rpath
//! to the libtorch directory torch-sys found, and `--no-as-needed -ltorch` so
//! that libtorch_cuda stays linked and CUDA is seen on a GPU machine.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath={dir}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg-bins=-ltorch");
}
