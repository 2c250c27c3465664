//! WebAssembly component plugins, hosted by wasmtime.
