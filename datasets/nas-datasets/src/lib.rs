//! # nas-datasets
//!
//! The built-in dataset loaders of `nas`, written against `nas-plugin-api`
//! exactly as a third-party plugin is. Each reads a dataset's real on-disk
//! release once and writes it as a **prepared dataset** (`manifest.json` +
//! `<split>.safetensors` with `images` u8 `[N, C, H, W]` and `labels` i64
//! `[N]`), reused by every later run unless asked to prepare again.
//!
//! | id | release read | settings (default) |
//! |---|---|---|
//! | `data.fashion-mnist` | IDX files, gzipped or raw | `root` (Debian's `/usr/share/datasets/fashion-mnist` when present) |
//! | `data.mnist` | IDX files, gzipped or raw | `root` |
//! | `data.cifar10` | `cifar-10-batches-bin/*.bin` or `cifar-10-binary.tar.gz` (or the python-pickle release) | `root` |
//! | `data.cifar100` | `cifar-100-binary/{train,test}.bin` or `cifar-100-binary.tar.gz` | `root`, `label_mode` (`fine`) |
//! | `data.svhn` | `train_32x32.mat`, `test_32x32.mat` (MATLAB v5) | `root`, `include_extra` (false) |
//! | `data.imagenette` | `imagenette2-160/{train,val}/<wnid>/*.JPEG` or the `.tgz` | `root`, `image_size` (160) |
//! | `data.image-folder` | `root/<split>/<class>/*.jpg\|png` | `root`, `image_size` (64), `train_split`, `test_split` |
//! | `data.celeba` | `img_align_celeba/`, `list_attr_celeba.txt`, `list_eval_partition.txt` | `root`, `attribute` (`Smiling`), `image_size` (64) |
//!
//! Unset `root` means `<data_dir>/raw/<name>`. The prepared cache is read
//! back, memory-mapped, with [`PreparedDataset::open`].
//!
//! ```
//! use nas_plugin_api::*;
//! let lib = ffi::NativeLibrary::from_ref(nas_datasets::library());
//! let ids: Vec<String> = lib.plugins().unwrap().into_iter().map(|p| p.id).collect();
//! assert!(ids.contains(&"data.fashion-mnist".to_string()));
//! ```

pub mod celeba;
pub mod cifar;
pub mod common;
pub mod error;
pub mod folder;
pub mod idx;
pub mod mat;
pub mod mnist;
pub mod pickle;
pub mod prepared;
pub mod source;
pub mod svhn;

use nas_plugin_api::{DatasetLoader, HostContext, PluginError, PluginFactory, PluginInfo, PluginInstance, PluginKind};

pub use error::FormatError;
pub use prepared::{PreparedDataset, PreparedSplit};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Makes a loader from its settings table and the host context.
pub type MakeLoader = fn(&serde_json::Value, &HostContext) -> Result<Box<dyn DatasetLoader>, PluginError>;

/// The factory of one built-in loader.
#[derive(Clone, Copy)]
pub struct LoaderFactory {
    /// Plugin id, `data.<name>`.
    pub id: &'static str,
    /// One line for `nas plugins list`.
    pub description: &'static str,
    /// Makes an instance.
    pub make: MakeLoader,
}

impl std::fmt::Debug for LoaderFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderFactory").field("id", &self.id).finish()
    }
}

impl PluginFactory for LoaderFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(self.id, PluginKind::Dataset, VERSION, self.description)
    }
    fn create(&self, config: &serde_json::Value, ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        (self.make)(config, ctx).map(PluginInstance::Dataset)
    }
}

/// `data.fashion-mnist`.
pub const FASHION_MNIST: LoaderFactory = LoaderFactory {
    id: "data.fashion-mnist",
    description: "Fashion-MNIST from its IDX files (Debian's dataset-fashion-mnist package by default)",
    make: |c, ctx| Ok(Box::new(mnist::IdxLoader::new(mnist::FASHION_MNIST, c, ctx)?)),
};

/// `data.mnist`.
pub const MNIST: LoaderFactory = LoaderFactory {
    id: "data.mnist",
    description: "MNIST handwritten digits from their IDX files",
    make: |c, ctx| Ok(Box::new(mnist::IdxLoader::new(mnist::MNIST, c, ctx)?)),
};

/// `data.cifar10`.
pub const CIFAR10: LoaderFactory = LoaderFactory {
    id: "data.cifar10",
    description: "CIFAR-10 from the binary release (folder or .tar.gz)",
    make: |c, ctx| Ok(Box::new(cifar::CifarLoader::cifar10(c, ctx)?)),
};

/// `data.cifar100`.
pub const CIFAR100: LoaderFactory = LoaderFactory {
    id: "data.cifar100",
    description: "CIFAR-100 from the binary release (fine or coarse labels)",
    make: |c, ctx| Ok(Box::new(cifar::CifarLoader::cifar100(c, ctx)?)),
};

/// `data.svhn`.
pub const SVHN: LoaderFactory = LoaderFactory {
    id: "data.svhn",
    description: "SVHN cropped digits from the MATLAB .mat release",
    make: |c, ctx| Ok(Box::new(svhn::SvhnLoader::new(c, ctx)?)),
};

/// `data.imagenette`.
pub const IMAGENETTE: LoaderFactory = LoaderFactory {
    id: "data.imagenette",
    description: "ImageNette (imagenette2-160), resized to image_size (160)",
    make: |c, ctx| Ok(Box::new(folder::FolderLoader::imagenette(c, ctx)?)),
};

/// `data.image-folder`.
pub const IMAGE_FOLDER: LoaderFactory = LoaderFactory {
    id: "data.image-folder",
    description: "Any root/<split>/<class>/*.jpg|png folder, resized to image_size",
    make: |c, ctx| Ok(Box::new(folder::FolderLoader::image_folder(c, ctx)?)),
};

/// `data.celeba`.
pub const CELEBA: LoaderFactory = LoaderFactory {
    id: "data.celeba",
    description: "CelebA aligned faces with one binary attribute as the label (Smiling)",
    make: |c, ctx| Ok(Box::new(celeba::CelebaLoader::new(c, ctx)?)),
};

/// Every built-in loader.
pub const FACTORIES: &[LoaderFactory] =
    &[FASHION_MNIST, MNIST, CIFAR10, CIFAR100, SVHN, IMAGENETTE, IMAGE_FOLDER, CELEBA];

nas_plugin_api::plugin_library!(
    /// The dataset loaders of this crate as a plugin library.
    pub fn library = [FASHION_MNIST, MNIST, CIFAR10, CIFAR100, SVHN, IMAGENETTE, IMAGE_FOLDER, CELEBA]
);

/// Makes the built-in loader `id` directly (without the plugin registry).
pub fn create_loader(
    id: &str,
    config: &serde_json::Value,
    ctx: &HostContext,
) -> Result<Box<dyn DatasetLoader>, PluginError> {
    let factory = FACTORIES
        .iter()
        .find(|f| f.id == id)
        .ok_or_else(|| PluginError::new(nas_plugin_api::ErrorCode::NotFound, format!("no built-in loader `{id}`")))?;
    (factory.make)(config, ctx)
}
