//! Why libtorch sees no CUDA device where one was asked for: the CUDA
//! driver's own answer (`cuInit` through `libcuda.so.1`) and whether this
//! process may open the GPU device files. A sandbox that leaves out a driver
//! library or a device node shows here by name, where libtorch only counts 0.

use std::ffi::{c_char, c_int, c_uint, CStr};

type CuInit = unsafe extern "C" fn(c_uint) -> c_int;
type CuDeviceGetCount = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuGetErrorText = unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int;

/// One line: what the CUDA driver says, then the device files and whether
/// each opens for reading and writing.
pub fn why_no_cuda() -> String {
    format!("{}; {}", driver_answer(), device_files())
}

fn dlerror_text() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// `cuInit(0)` and `cuDeviceGetCount` through the driver library.
fn driver_answer() -> String {
    // SAFETY: dlopen with a constant NUL-terminated name; the handle is kept
    // open for the process (the driver stays loaded by libtorch anyway).
    let lib = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if lib.is_null() {
        return format!("the CUDA driver library libcuda.so.1 does not load here: {}", dlerror_text());
    }
    let sym = |name: &CStr| {
        // SAFETY: `lib` is a live handle, `name` NUL-terminated.
        let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    let (Some(init), Some(count)) = (sym(c"cuInit"), sym(c"cuDeviceGetCount")) else {
        return "libcuda.so.1 loads but has no cuInit or cuDeviceGetCount".into();
    };
    // SAFETY: the symbols have the driver API's C signatures.
    let (init, count): (CuInit, CuDeviceGetCount) = unsafe {
        (
            std::mem::transmute::<*mut libc::c_void, CuInit>(init),
            std::mem::transmute::<*mut libc::c_void, CuDeviceGetCount>(count),
        )
    };
    let text = |code: c_int| -> String {
        let mut out = Vec::new();
        for (f, label) in [(c"cuGetErrorName", ""), (c"cuGetErrorString", ": ")] {
            if let Some(p) = sym(f) {
                // SAFETY: the driver API's signature; it writes a static string or leaves NULL.
                let f = unsafe { std::mem::transmute::<*mut libc::c_void, CuGetErrorText>(p) };
                let mut s: *const c_char = std::ptr::null();
                // SAFETY: `s` is a valid out pointer.
                if unsafe { f(code, &mut s) } == 0 && !s.is_null() {
                    // SAFETY: non-null static NUL-terminated string from the driver.
                    out.push(format!("{label}{}", unsafe { CStr::from_ptr(s) }.to_string_lossy()));
                }
            }
        }
        if out.is_empty() {
            format!("error {code}")
        } else {
            format!("{} ({code})", out.concat())
        }
    };
    // SAFETY: cuInit takes flags 0.
    let rc = unsafe { init(0) };
    if rc != 0 {
        return format!("the CUDA driver's cuInit fails: {}", text(rc));
    }
    let mut n: c_int = 0;
    // SAFETY: `n` is a valid out pointer.
    let rc = unsafe { count(&mut n) };
    if rc != 0 {
        return format!("the CUDA driver's cuDeviceGetCount fails: {}", text(rc));
    }
    format!("the CUDA driver itself sees {n} device(s)")
}

/// The device files the CUDA driver opens besides the numbered GPUs.
const CONTROL_FILES: [&str; 3] = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"];

/// `/dev/nvidia*` and whether each opens read-write here. A sandbox may bind
/// them without letting `/dev` be listed, so the control files and the
/// numbered GPUs (up to the first missing one) are tried by name.
fn device_files() -> String {
    let mut names: Vec<String> = CONTROL_FILES.iter().map(|n| n.to_string()).collect();
    names.extend((0..64).map(|i| format!("nvidia{i}")).take_while(|n| std::path::Path::new("/dev").join(n).exists()));
    // Others the directory lists, where it can be listed.
    let listed: std::io::Result<Vec<String>> = std::fs::read_dir("/dev").map(|d| {
        d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("nvidia")).collect()
    });
    if let Ok(listed) = &listed {
        for n in listed {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let mut found = false;
    let each: Vec<String> = names
        .iter()
        .map(|n| {
            let p = std::path::Path::new("/dev").join(n);
            if p.is_dir() {
                found = true;
                return format!("{} (a directory)", p.display());
            }
            match std::fs::OpenOptions::new().read(true).write(true).open(&p) {
                Ok(_) => {
                    found = true;
                    format!("{} opens", p.display())
                }
                Err(e) => {
                    found |= e.kind() != std::io::ErrorKind::NotFound;
                    format!("{}: {e}", p.display())
                }
            }
        })
        .collect();
    let listing = match listed {
        Ok(_) => String::new(),
        Err(e) => format!(" (/dev cannot be listed here: {e})"),
    };
    if !found {
        return format!("no /dev/nvidia* device files here{listing}");
    }
    format!("device files: {}{listing}", each.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_the_driver_and_the_device_files() {
        let text = why_no_cuda();
        assert!(
            text.contains("libcuda.so.1") || text.contains("cuInit") || text.contains("CUDA driver itself sees"),
            "{text}"
        );
        assert!(text.contains("/dev/nvidia") || text.contains("no /dev/nvidia* device files"), "{text}");
    }
}
