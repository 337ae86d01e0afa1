//! Configuration errors that say where (file, line, column, dotted field
//! path), what is wrong and what to do about it.

use std::fmt;

/// One problem in a configuration file.
///
/// Displayed as `{file}:{line}:{column}: {field}: {problem}; {hint}`, e.g.
/// `appliance.toml:4:16: eal.worker_cores[1]: lcore 7 does not exist on this
/// machine (4 CPUs online); use an lcore id from 0 to 3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {problem}; {hint}")]
pub struct ConfigError {
    /// The file name as given to [`crate::parse`] / [`crate::load`].
    pub file: String,
    /// 1-based line; 0 when the file could not be read at all.
    pub line: usize,
    /// 1-based column in characters; 0 when the file could not be read.
    pub column: usize,
    /// Dotted path of the offending key with 0-based indices into arrays of
    /// tables, e.g. `vip[0].backend[1].address` or `eal.worker_cores`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub hint: String,
}

/// All problems found in one configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True if there are no errors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Iterates over the errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
    /// The first error whose field path is exactly `field`, if any.
    pub fn find(&self, field: &str) -> Option<&ConfigError> {
        self.0.iter().find(|e| e.field == field)
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl From<Vec<ConfigError>> for ConfigErrors {
    fn from(v: Vec<ConfigError>) -> Self {
        ConfigErrors(v)
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
