//! Layered configuration: built-in defaults, then an optional TOML file, then
//! environment variables (`SHOAL__SECTION__KEY`), validated into typed structs.
//!
//! Every binary has its own settings struct; each section lives with the
//! code it configures (`shoal_kafka::settings`, `shoal_telemetry::settings`,
//! ...). This crate loads them, says what is wrong naming the key and the
//! expected form, and redacts secrets for printing.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod check;
mod choice;

pub use check::{at_least, both_or_neither, in_range, initial_delay, non_empty, one_of};
pub use choice::UnknownChoice;

/// For [`choice!`]: the expansion names serde through this crate.
#[doc(hidden)]
pub use serde as __serde;

/// Prefix of environment variables that override configuration.
pub const ENV_PREFIX: &str = "SHOAL";
/// Separator between nesting levels in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// A configuration problem, always naming the key and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value failed validation after parsing.
    #[error("invalid configuration value for `{key}`: {message} (expected {expected})")]
    Invalid {
        /// Dotted key, e.g. `kafka.bootstrap_servers`.
        key: String,
        /// What is wrong with the value.
        message: String,
        /// The expected form.
        expected: String,
    },
    /// The layered sources could not be read or did not deserialize.
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
}

impl SettingsError {
    /// Builds an [`SettingsError::Invalid`].
    pub fn invalid(key: impl Into<String>, message: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), message: message.into(), expected: expected.into() }
    }

    /// A deserialization error; an unknown [`choice!`] string at a key is
    /// worded like any other invalid value.
    fn deserializing(error: config::ConfigError) -> Self {
        if let config::ConfigError::At { error: inner, key: Some(key), .. } = &error
            && let config::ConfigError::Message(text) = inner.as_ref()
            && let Some(unknown) = UnknownChoice::from_message(text)
        {
            return unknown.for_key(key);
        }
        Self::Load(error)
    }
}

/// Implemented by each binary's settings struct.
pub trait Validate {
    /// Dotted keys whose environment values are comma-separated lists.
    const LIST_KEYS: &'static [&'static str] = &[];

    /// Checks cross-field rules and value ranges that serde cannot express.
    fn validate(&self) -> Result<(), SettingsError>;
}

/// Loads `T` from defaults (`T::default()`), then `file` if given (must exist)
/// or `shoal.toml` in the working directory if present, then the environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    load_from(file, std::env::vars())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_from<T, I>(file: Option<&Path>, env: I) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
    I: IntoIterator<Item = (String, String)>,
{
    let defaults = config::Config::try_from(&T::default())?;
    let mut builder = config::Config::builder().add_source(defaults);
    builder = match file {
        Some(path) => builder.add_source(config::File::from(path).required(true)),
        None => builder.add_source(config::File::with_name("shoal.toml").required(false)),
    };
    let env_map: config::Map<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}"))).collect();
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .try_parsing(true)
        .source(Some(env_map));
    if !T::LIST_KEYS.is_empty() {
        environment = environment.list_separator(",");
        for key in T::LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
    }
    builder = builder.add_source(environment);
    let settings: T = builder.build()?.try_deserialize().map_err(SettingsError::deserializing)?;
    settings.validate()?;
    Ok(settings)
}

/// The settings as JSON with secret-looking values (passwords, secrets,
/// tokens, private keys) replaced, for `--print-config` and logs.
pub fn redacted<T: Serialize>(settings: &T) -> serde_json::Value {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    // Raw librdkafka options may be spelt with `_` for `.`
                    // (as the environment must): `ssl_key_pem` is `ssl.key.pem`.
                    let k = key.to_ascii_lowercase().replace('_', ".");
                    let secret = ["password", "secret", "token", "key.pem", "private"].iter().any(|s| k.contains(s));
                    if secret && v.is_string() {
                        *v = serde_json::Value::String("<redacted>".into());
                    } else if k == "headers"
                        && let Some(headers) = v.as_object_mut()
                    {
                        // Extra handshake headers carry credentials (API keys,
                        // bearer tokens): keep the names, hide every value.
                        for value in headers.values_mut() {
                            *value = serde_json::Value::String("<redacted>".into());
                        }
                    } else {
                        walk(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(settings).unwrap_or(serde_json::Value::Null);
    walk(&mut value);
    value
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::choice::tests::Colour;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        name: String,
        count: u32,
        flag: bool,
        colour: Colour,
        options: BTreeMap<String, String>,
    }

    impl Default for Section {
        fn default() -> Self {
            Self { name: "default".into(), count: 1, flag: false, colour: Colour::Red, options: BTreeMap::new() }
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct TestSettings {
        section: Section,
        list: Vec<String>,
    }

    impl Validate for TestSettings {
        const LIST_KEYS: &'static [&'static str] = &["list"];

        fn validate(&self) -> Result<(), SettingsError> {
            one_of("section.name", &self.section.name, &["default", "from.file", "from.env"])?;
            at_least("section.count", self.section.count, 1, "an integer")
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_overrides_defaults_and_lists_split_on_commas() {
        let s: TestSettings = load_from(
            None,
            env(&[
                ("SHOAL__SECTION__NAME", "from.env"),
                ("SHOAL__SECTION__OPTIONS__SOCKET_KEEPALIVE", "true"),
                ("SHOAL__LIST", "a,b"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.section.name, "from.env");
        assert_eq!(s.section.count, 1);
        assert_eq!(s.section.options.get("socket_keepalive").map(String::as_str), Some("true"));
        assert_eq!(s.list, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn file_layer_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("shoal-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shoal.toml");
        std::fs::write(&path, "[section]\nname = \"from.file\"\ncount = 3\n").unwrap();
        let s: TestSettings = load_from(Some(&path), env(&[("SHOAL__SECTION__COUNT", "7")])).unwrap();
        assert_eq!(s.section.name, "from.file");
        assert_eq!(s.section.count, 7);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_name_the_key_and_the_expected_form() {
        let err = load_from::<TestSettings, _>(None, env(&[("SHOAL__SECTION__NAME", "other")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("section.name") && text.contains("one of default, from.file, from.env"), "{text}");
        let err = load_from::<TestSettings, _>(None, env(&[("SHOAL__SECTION__COUNT", "0")])).unwrap_err();
        assert!(err.to_string().contains("section.count"), "{err}");
        let err = load_from::<TestSettings, _>(None, env(&[("SHOAL__SECTION__COUNT", "many")])).unwrap_err();
        assert!(err.to_string().contains("count"), "{err}");
    }

    #[test]
    fn choices_take_their_strings_and_unknown_ones_name_the_key() {
        let s: TestSettings = load_from(None, env(&[("SHOAL__SECTION__COLOUR", "light/blue")])).unwrap();
        assert_eq!(s.section.colour, Colour::LightBlue);
        assert_eq!(redacted(&s)["section"]["colour"], "light/blue");
        let err = load_from::<TestSettings, _>(None, env(&[("SHOAL__SECTION__COLOUR", "blue")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration value for `section.colour`: \"blue\" is not recognised (expected one of red, light/blue)"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = load_from::<TestSettings, _>(None, env(&[("SHOAL__SECTION__NAMES", "x")])).unwrap_err().to_string();
        assert!(err.contains("names"), "{err}");
    }

    #[test]
    fn redaction_hides_secrets() {
        let mut s = TestSettings::default();
        s.section.options.insert("sasl.password".into(), "hunter2".into());
        s.section.options.insert("api_token".into(), "t0k3n".into());
        // The environment's spelling of ssl.key.pem.
        s.section.options.insert("ssl_key_pem".into(), "-----BEGIN PRIVATE KEY-----".into());
        let json = redacted(&s).to_string();
        assert!(!json.contains("hunter2") && !json.contains("t0k3n") && !json.contains("BEGIN PRIVATE"), "{json}");
        assert!(json.contains("<redacted>"));
    }
}
