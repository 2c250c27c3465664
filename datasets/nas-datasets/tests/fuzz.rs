//! Property tests over the format parsers: arbitrary and mutated bytes
//! never panic, and valid encodings always parse back to what was written.
//! (Coverage-guided fuzz targets for the same parsers live in `fuzz/`.)

use nas_datasets::celeba::{parse_attributes, parse_partition};
use nas_datasets::cifar::parse_batch;
use nas_datasets::idx::{encode_idx, parse_idx};
use nas_datasets::mat::{encode_mat, parse_mat, MatData, MatVar, MX_DOUBLE, MX_UINT8};
use proptest::prelude::*;

fn small_mat(n: usize, compress: bool) -> Vec<u8> {
    encode_mat(
        &[
            MatVar { name: "X", dims: vec![2, 2, 3, n], class: MX_UINT8, data: MatData::U8(vec![7; 12 * n]) },
            MatVar { name: "y", dims: vec![n, 1], class: MX_DOUBLE, data: MatData::F64(vec![3.0; n]) },
        ],
        compress,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn idx_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_idx(bytes);
    }

    #[test]
    fn idx_round_trips(dims in proptest::collection::vec(1usize..5, 1..4), seed in any::<u8>()) {
        let n: usize = dims.iter().product();
        let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let parsed = parse_idx(encode_idx(&dims, &data)).expect("valid IDX parses");
        prop_assert_eq!(parsed.dims, dims);
        prop_assert_eq!(parsed.data, data);
    }

    #[test]
    fn idx_mutations_never_panic(at in 0usize..40, value in any::<u8>(), cut in 0usize..40) {
        let mut bytes = encode_idx(&[2, 3, 4], &[9; 24]);
        let at = at % bytes.len();
        bytes[at] = value;
        bytes.truncate(bytes.len() - cut.min(bytes.len()));
        let _ = parse_idx(bytes);
    }

    #[test]
    fn mat_never_panics_on_arbitrary_bytes(tail in proptest::collection::vec(any::<u8>(), 0..512), le in any::<bool>()) {
        let mut bytes = b"MATLAB 5.0 MAT-file".to_vec();
        bytes.resize(124, b' ');
        bytes.extend([0, 1]);
        bytes.extend(if le { b"IM" } else { b"MI" });
        bytes.extend(tail);
        let _ = parse_mat(&bytes);
    }

    #[test]
    fn mat_mutations_never_panic(n in 1usize..4, compress in any::<bool>(), at in any::<usize>(), value in any::<u8>(), cut in 0usize..64) {
        let mut bytes = small_mat(n, compress);
        let at = 128 + at % (bytes.len() - 128);
        bytes[at] = value;
        bytes.truncate(bytes.len() - cut);
        let _ = parse_mat(&bytes);
    }

    #[test]
    fn mat_round_trips(n in 1usize..5, compress in any::<bool>()) {
        let vars = parse_mat(&small_mat(n, compress)).expect("valid MAT parses");
        prop_assert_eq!(vars.len(), 2);
        prop_assert_eq!(&vars[0].dims, &vec![2, 2, 3, n]);
        prop_assert_eq!(vars[0].data.to_u8(), Some(vec![7; 12 * n]));
        prop_assert_eq!(vars[1].data.to_f64(), vec![3.0; n]);
    }

    #[test]
    fn cifar_batches_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8000), two in any::<bool>()) {
        let (lb, li, classes) = if two { (2, 1, 100) } else { (1, 0, 10) };
        if let Ok(split) = parse_batch(&bytes, lb, li, classes) {
            prop_assert_eq!(split.images.len(), split.labels.len() * 3072);
        }
    }

    #[test]
    fn celeba_lists_never_panic(text in "[0-9a-zA-Z_. \\-\n]{0,200}") {
        let _ = parse_attributes(&text, "Smiling");
        let _ = parse_partition(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pickle_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = nas_datasets::pickle::parse_pickle(&bytes);
    }

    #[test]
    fn pickle_mutations_never_panic(at in any::<usize>(), value in any::<u8>(), cut in 0usize..400) {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cifar10-batch-protocol4.pickle");
        let mut bytes = std::fs::read(fixture).expect("fixture");
        let at = at % bytes.len();
        bytes[at] = value;
        bytes.truncate(bytes.len() - cut);
        let _ = nas_datasets::cifar::parse_pickled_batch(&bytes, "labels", 10);
    }
}

#[test]
fn pickle_memo_copies_are_bounded() {
    // 64 KiB of bytes memoised, then fetched back 100,000 times: refused, not 6 GB of copies.
    let mut p = vec![0x80, 4, b'B'];
    p.extend((64u32 << 10).to_le_bytes());
    p.extend(vec![0u8; 64 << 10]);
    p.extend([b'q', 0]);
    for _ in 0..100_000 {
        p.extend([b'h', 0]);
    }
    p.push(b'.');
    let err = nas_datasets::pickle::parse_pickle(&p).expect_err("bounded");
    assert!(err.to_string().contains("memo copies"), "{err}");
}
