//! The `nas` host library.
