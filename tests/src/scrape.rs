//! Reading `/metrics` the way Prometheus does, so tests can assert on one sample.

use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with `_bucket`, `_sum`, `_count` suffixes for histograms).
    pub name: String,
    /// Label names and values.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every sample of one scrape, in the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The samples, in the order given.
    pub samples: Vec<Sample>,
    /// The text as served.
    pub text: String,
}

impl Scrape {
    /// Parses the text exposition format (no escapes inside label values are needed here:
    /// ours are route templates, codes and fixed words; a sample that cannot be read panics).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) =
                    line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap_or_else(|e| panic!("value {v:?} ({e}) in {line}")),
                };
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_owned(), BTreeMap::new()),
                    Some((name, rest)) => {
                        let inside = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                        let labels = inside
                            .split("\",")
                            .filter(|pair| !pair.is_empty())
                            .map(|pair| {
                                let (key, value) =
                                    pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                                (key.to_owned(), value.trim_end_matches('"').to_owned())
                            })
                            .collect();
                        (name.to_owned(), labels)
                    }
                };
                Sample { name, labels, value }
            })
            .collect();
        Scrape { samples, text: text.to_owned() }
    }

    /// The value of the sample with this name and (at least) these labels, if there is one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Like [`Scrape::get`], 0 when the series does not exist yet (counters start absent).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The sum of every sample with this name, whatever its labels.
    pub fn total(&self, name: &str) -> f64 {
        self.samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
    }

    /// Every sample with this name.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}
