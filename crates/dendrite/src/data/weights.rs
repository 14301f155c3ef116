//! Class weights for imbalanced classification.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// How much each class counts in the training loss.
///
/// In a config, `class_weights = "balanced"` or a table of class name to weight, such as
/// `class_weights = { bad = 3.0, good = 1.0 }`. Classes not in the table get weight 1.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    /// Each class gets `n / (k * n_c)` for `n` training rows, `k` classes present in them
    /// and `n_c` rows of the class, so every class contributes the same total weight and
    /// the mean weight of a row is 1. This is scikit-learn's `class_weight="balanced"`.
    Balanced,
    /// A weight per class name.
    PerClass(BTreeMap<String, f32>),
}

impl ClassWeights {
    /// Returns the weight of each class of `class_names`, from the training `labels`.
    /// A class without training rows gets weight 0 under [`ClassWeights::Balanced`].
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if a per-class weight names a class that is not in
    /// `class_names`, or is negative, zero or not finite.
    ///
    /// # Panics
    ///
    /// Panics if a label is not below `class_names.len()`.
    pub fn resolve(&self, labels: &[usize], class_names: &[String]) -> Result<Vec<f32>> {
        match self {
            ClassWeights::Balanced => {
                let mut counts = vec![0usize; class_names.len()];
                for &label in labels {
                    counts[label] += 1;
                }
                let present = counts.iter().filter(|&&count| count > 0).count();
                Ok(counts
                    .iter()
                    .map(|&count| {
                        if count == 0 {
                            0.0
                        } else {
                            (labels.len() as f64 / (present * count) as f64) as f32
                        }
                    })
                    .collect())
            }
            ClassWeights::PerClass(weights) => {
                for (name, &weight) in weights {
                    if !class_names.contains(name) {
                        return Err(Error::InvalidConfig(format!(
                            "data.class_weights names class \"{name}\", which is not in the \
                             training file; its classes are {}",
                            class_names.join(", ")
                        )));
                    }
                    if !(weight.is_finite() && weight > 0.0) {
                        return Err(Error::InvalidConfig(format!(
                            "data.class_weights.{name} = {weight} is invalid; use a positive \
                             number"
                        )));
                    }
                }
                Ok(class_names
                    .iter()
                    .map(|name| weights.get(name).copied().unwrap_or(1.0))
                    .collect())
            }
        }
    }
}

impl Serialize for ClassWeights {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ClassWeights::Balanced => serializer.serialize_str("balanced"),
            ClassWeights::PerClass(weights) => weights.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ClassWeights {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(ClassWeightsVisitor)
    }
}

/// Reads `"balanced"` or a map of class name to weight, with a message that names both
/// forms when neither fits.
struct ClassWeightsVisitor;

impl<'de> Visitor<'de> for ClassWeightsVisitor {
    type Value = ClassWeights;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("\"balanced\" or a table of class name = weight")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> std::result::Result<ClassWeights, E> {
        if value == "balanced" {
            Ok(ClassWeights::Balanced)
        } else {
            Err(E::invalid_value(de::Unexpected::Str(value), &self))
        }
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<ClassWeights, A::Error> {
        let mut weights = BTreeMap::new();
        while let Some((name, weight)) = map.next_entry::<String, f32>()? {
            weights.insert(name, weight);
        }
        Ok(ClassWeights::PerClass(weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn balanced_weights_by_hand() {
        // 6 rows: 4 of class 0, 2 of class 1, none of class 2. Two classes are present, so
        // class 0 gets 6 / (2 * 4) = 0.75 and class 1 gets 6 / (2 * 2) = 1.5.
        let labels = [0, 0, 1, 0, 1, 0];

        let weights = ClassWeights::Balanced
            .resolve(&labels, &names(&["a", "b", "c"]))
            .unwrap();

        assert_eq!(weights, vec![0.75, 1.5, 0.0]);
    }

    #[test]
    fn per_class_weights_default_to_one() {
        let weights = ClassWeights::PerClass(BTreeMap::from([("bad".to_string(), 5.0)]))
            .resolve(&[0, 1], &names(&["bad", "good"]))
            .unwrap();

        assert_eq!(weights, vec![5.0, 1.0]);
    }

    #[test]
    fn per_class_weights_reject_bad_entries() {
        let classes = names(&["bad", "good"]);

        let unknown = ClassWeights::PerClass(BTreeMap::from([("ugly".to_string(), 2.0)]));
        let message = unknown.resolve(&[0], &classes).unwrap_err().to_string();
        assert!(message.contains("class \"ugly\""), "{message}");
        assert!(message.contains("bad, good"), "{message}");

        for weight in [0.0, -1.0, f32::NAN] {
            let bad = ClassWeights::PerClass(BTreeMap::from([("bad".to_string(), weight)]));
            let message = bad.resolve(&[0], &classes).unwrap_err().to_string();
            assert!(message.contains("use a positive number"), "{message}");
        }
    }

    #[test]
    fn class_weights_parse_from_toml() {
        #[derive(Deserialize)]
        struct Config {
            class_weights: ClassWeights,
        }

        let balanced: Config = toml::from_str("class_weights = \"balanced\"").unwrap();
        assert_eq!(balanced.class_weights, ClassWeights::Balanced);

        let table: Config = toml::from_str("class_weights = { bad = 3, good = 1.5 }").unwrap();
        assert_eq!(
            table.class_weights,
            ClassWeights::PerClass(BTreeMap::from([
                ("bad".to_string(), 3.0),
                ("good".to_string(), 1.5)
            ]))
        );

        let message = toml::from_str::<Config>("class_weights = \"balance\"")
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("\"balanced\" or a table"), "{message}");
    }

    #[test]
    fn class_weights_round_trip_through_json() {
        for weights in [
            ClassWeights::Balanced,
            ClassWeights::PerClass(BTreeMap::from([("a".to_string(), 2.0)])),
        ] {
            let json = serde_json::to_string(&weights).unwrap();
            let back: ClassWeights = serde_json::from_str(&json).unwrap();
            assert_eq!(back, weights);
        }
    }
}
