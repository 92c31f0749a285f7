//! Settings that take one of a closed set of strings, as Rust enums
//! ([`choice!`](macro@crate::choice)): the strings accepted, printed and named in
//! errors are written once, next to the variants.

use std::fmt;

use crate::SettingsError;

/// A string that names none of a choice's variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownChoice {
    value: String,
    expected: String,
}

const NOT_RECOGNISED: &str = " is not recognised (expected ";

impl UnknownChoice {
    /// `value` is none of `names`.
    pub fn new(value: &str, names: &[&str]) -> Self {
        Self { value: format!("{value:?}"), expected: format!("one of {}", names.join(", ")) }
    }

    /// The error for `key`, worded as [`one_of`](crate::one_of) words it.
    pub fn for_key(&self, key: &str) -> SettingsError {
        SettingsError::invalid(key, format!("{} is not recognised", self.value), self.expected.clone())
    }

    /// Reads back the text this type displays (which is what serde keeps of
    /// a deserialization error).
    pub(crate) fn from_message(text: &str) -> Option<Self> {
        let (value, expected) = text.strip_suffix(')')?.split_once(NOT_RECOGNISED)?;
        expected.starts_with("one of ").then(|| Self { value: value.to_owned(), expected: expected.to_owned() })
    }
}

impl fmt::Display for UnknownChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{NOT_RECOGNISED}{})", self.value, self.expected)
    }
}

impl std::error::Error for UnknownChoice {}

/// Declares an enum whose variants are configuration strings: serialized as
/// the string, deserialized from it (an unknown string fails with an error
/// naming the key and every accepted string), with `as_str`, `Display`,
/// `FromStr`, `ALL` and `NAMES`.
///
/// ```
/// shoal_config::choice! {
///     /// How to connect.
///     pub enum Protocol {
///         /// Unencrypted.
///         Plain = "plaintext",
///         /// TLS.
///         Tls = "ssl",
///     }
/// }
/// assert_eq!(Protocol::Tls.as_str(), "ssl");
/// assert_eq!("plaintext".parse::<Protocol>(), Ok(Protocol::Plain));
/// ```
#[macro_export]
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        // Not every choice needs every item.
        #[allow(dead_code)]
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// The string naming each variant, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The string naming this variant in configuration.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::UnknownChoice;

            fn from_str(text: &str) -> ::std::result::Result<Self, Self::Err> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::UnknownChoice::new(text, Self::NAMES)),
                }
            }
        }

        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(&self, serializer: S) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(deserializer: D) -> ::std::result::Result<Self, D::Error> {
                let text = <::std::string::String as $crate::__serde::Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(<D::Error as $crate::__serde::de::Error>::custom)
            }
        }
    };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    crate::choice! {
        /// A test choice, also used by the loading tests.
        pub(crate) enum Colour {
            /// Red.
            Red = "red",
            /// Light blue.
            LightBlue = "light/blue",
        }
    }

    #[test]
    fn strings_round_trip_and_unknown_ones_name_every_variant() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::LightBlue]);
        assert_eq!(Colour::LightBlue.to_string(), "light/blue");
        assert_eq!("red".parse::<Colour>(), Ok(Colour::Red));
        assert_eq!(serde_json::to_string(&Colour::LightBlue).unwrap(), "\"light/blue\"");
        assert_eq!(serde_json::from_str::<Colour>("\"light/blue\"").unwrap(), Colour::LightBlue);
        let unknown = "Red".parse::<Colour>().unwrap_err();
        assert_eq!(unknown.to_string(), "\"Red\" is not recognised (expected one of red, light/blue)");
        assert_eq!(UnknownChoice::from_message(&unknown.to_string()), Some(unknown.clone()));
        assert_eq!(
            unknown.for_key("paint.colour").to_string(),
            "invalid configuration value for `paint.colour`: \"Red\" is not recognised (expected one of red, light/blue)"
        );
        assert!(serde_json::from_str::<Colour>("\"blue\"").is_err());
    }
}
