//! The held-out test split, kept on the host's side: the sandboxed trainer
//! gets the test images without their labels (a file of images only), asks
//! for them in an order drawn afresh for every evaluation, and answers its
//! predictions; the labels never enter a sandboxed process, and this module
//! scores the predictions against them.

use std::path::{Path, PathBuf};

use nas_plugin_api::{ErrorCode, PluginError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// The labels of a prepared test split, and where its images (alone) were written.
#[derive(Debug)]
pub struct HeldOut {
    labels: Vec<i64>,
    /// The images-only safetensors file (`images`, uint8 `[N,C,H,W]`).
    pub images_path: PathBuf,
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> PluginError {
    PluginError::new(ErrorCode::Corrupt, format!("{}: {what}", path.display()))
}

impl HeldOut {
    /// Reads the prepared test split `split` (its first `max` examples when
    /// given), writes its images alone to `images_path`, keeps the labels.
    pub fn prepare(split: &Path, max: Option<u64>, images_path: &Path) -> Result<HeldOut, PluginError> {
        let bytes = std::fs::read(split).map_err(|e| PluginError::io(split, e))?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| corrupt(split, format!("not a safetensors file: {e}")))?;
        let images = st.tensor("images").map_err(|e| corrupt(split, format!("`images`: {e}")))?;
        let labels = st.tensor("labels").map_err(|e| corrupt(split, format!("`labels`: {e}")))?;
        let shape = images.shape().to_vec();
        if images.dtype() != Dtype::U8 || shape.len() != 4 {
            return Err(corrupt(split, format!("`images` must be uint8 [N,C,H,W], is {:?} {shape:?}", images.dtype())));
        }
        if labels.dtype() != Dtype::I64 || labels.shape() != [shape[0]] {
            return Err(corrupt(split, "`labels` must be int64 [N] matching the images"));
        }
        let n = match max {
            Some(m) if m > 0 && (m as usize) < shape[0] => m as usize,
            _ => shape[0],
        };
        let per = shape[1] * shape[2] * shape[3];
        let data = images.data();
        let pixels = data.get(..n * per).ok_or_else(|| corrupt(split, "`images` is shorter than its shape"))?;
        let labels: Vec<i64> = labels
            .data()
            .chunks_exact(8)
            .take(n)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect();
        let view = TensorView::new(Dtype::U8, vec![n, shape[1], shape[2], shape[3]], pixels)
            .map_err(|e| corrupt(split, format!("`images`: {e}")))?;
        let _ = std::fs::remove_file(images_path);
        safetensors::serialize_to_file(vec![("images", view)], None, images_path)
            .map_err(|e| PluginError::io(images_path, e.to_string()))?;
        Ok(HeldOut { labels, images_path: images_path.to_path_buf() })
    }

    /// How many test examples there are.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// A fresh random order of the test examples (indices into the images file).
    pub fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        // Fisher-Yates, with a generator seeded from the kernel's entropy.
        let mut state = random_u64();
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for i in (1..order.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }

    /// The accuracy of `predictions` (class indices, in the order `order`
    /// asked for them); `None` when they do not match the order.
    pub fn accuracy(&self, order: &[usize], predictions: &[i64]) -> Option<f64> {
        if order.len() != self.labels.len() || predictions.len() != order.len() {
            return None;
        }
        let mut correct = 0usize;
        for (&i, &p) in order.iter().zip(predictions) {
            if self.labels.get(i) == Some(&p) {
                correct += 1;
            }
        }
        Some(correct as f64 / self.labels.len().max(1) as f64)
    }
}

/// 64 random bits from the kernel (`getrandom(2)`).
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n > 0 {
            got += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // No kernel entropy (never on Linux ≥ 3.17): fall back to the clock.
            return std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        }
    }
    u64::from_ne_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_images_file_holds_no_labels_and_scores_follow_the_order() {
        let dir = std::env::temp_dir().join(format!("nas-held-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let split = dir.join("test.safetensors");
        let pixels: Vec<u8> = (0..5u8).flat_map(|i| [i; 4]).collect();
        let labels: Vec<u8> = [3i64, 1, 4, 1, 5].iter().flat_map(|l| l.to_le_bytes()).collect();
        safetensors::serialize_to_file(
            vec![
                ("images", TensorView::new(Dtype::U8, vec![5, 1, 2, 2], &pixels).expect("view")),
                ("labels", TensorView::new(Dtype::I64, vec![5], &labels).expect("view")),
            ],
            None,
            &split,
        )
        .expect("write");
        let held = HeldOut::prepare(&split, Some(4), &dir.join("images.safetensors")).expect("prepare");
        assert_eq!(held.len(), 4);
        let written = std::fs::read(&held.images_path).expect("read");
        let st = SafeTensors::deserialize(&written).expect("safetensors");
        assert_eq!(st.names(), ["images"], "only the images leave the host");
        assert_eq!(st.tensor("images").expect("images").shape(), [4, 1, 2, 2]);
        let order = vec![2, 0, 3, 1];
        assert_eq!(held.accuracy(&order, &[4, 3, 1, 1]), Some(1.0));
        assert_eq!(held.accuracy(&order, &[3, 1, 4, 1]), Some(0.25), "file order is not the asked order");
        assert_eq!(held.accuracy(&order, &[4, 3, 1]), None);
        let mut o = held.order();
        o.sort();
        assert_eq!(o, [0, 1, 2, 3]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
