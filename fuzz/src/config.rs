//! The configuration loader: the input is a TOML file, loaded the way the
//! binaries load `--config FILE` (`shoal_config::load_from`: defaults, the
//! file, no environment) into both the orchestrator's and the worker's
//! settings, with their validation. Loaded settings are written back as
//! TOML and loaded again: the same settings.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_config::{SettingsError, Validate};
use shoal_orchestrator::settings::OrchestratorSettings;
use shoal_worker::settings::WorkerSettings;

/// The file inputs are written to: the loader only takes paths. One per
/// process (libFuzzer's `-fork`/`-jobs` run several).
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shoal-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("shoal.toml")
    })
}

/// Loads `data` as a configuration file.
pub fn file(data: &[u8]) {
    // The loader reads the file as UTF-8 text; anything else is one error.
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The loader parses the file with this same call (config's TOML format)
    // after building the defaults layer, which costs most of a load: text
    // it rejects fails every load here the same way, so it is not loaded.
    if toml::de::DeTable::parse(text).is_err() {
        return;
    }
    settings::<OrchestratorSettings>(text);
    settings::<WorkerSettings>(text);
}

fn load<T>(text: &str) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    std::fs::write(path(), text).unwrap();
    shoal_config::load_from(Some(path()), std::iter::empty())
}

fn settings<T>(text: &str)
where
    T: Default + Serialize + DeserializeOwned + Validate + PartialEq + Debug,
{
    let Ok(loaded) = load::<T>(text) else { return };
    let _ = shoal_config::redacted(&loaded);
    // TOML cannot hold every value serde can (an integer above i64::MAX);
    // those settings have no file to round-trip through.
    let Ok(written) = toml::to_string(&loaded) else { return };
    let again = load::<T>(&written).unwrap_or_else(|error| {
        panic!("loaded settings do not load again: {error}\ninput:\n{text}\nwritten:\n{written}")
    });
    assert_eq!(again, loaded, "settings changed when written back\ninput:\n{text}\nwritten:\n{written}");
}
