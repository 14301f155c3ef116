//! Named trainable tensors.

use crate::tensor::Tensor;

/// Index of a parameter inside its [`Parameters`].
pub type ParamId = usize;

/// The trainable tensors of a model, in a fixed order, each with a stable name such as
/// `layers.0.weight`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters {
    names: Vec<String>,
    values: Vec<Tensor>,
}

impl Parameters {
    /// Creates an empty set.
    pub fn new() -> Self {
        Parameters::default()
    }

    /// Adds a tensor under `name` and returns its id.
    ///
    /// # Panics
    ///
    /// Panics if `name` is already taken: layer code builds the names, so a clash is a bug.
    pub fn push(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        let name = name.into();
        assert!(
            !self.names.contains(&name),
            "parameter name {name} used twice"
        );
        self.names.push(name);
        self.values.push(value);
        self.values.len() - 1
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Returns true if there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The total number of scalar values.
    pub fn numel(&self) -> usize {
        self.values.iter().map(Tensor::numel).sum()
    }

    /// The name of parameter `id`.
    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id]
    }

    /// The value of parameter `id`.
    pub fn get(&self, id: ParamId) -> &Tensor {
        &self.values[id]
    }

    /// The value of parameter `id`, mutable.
    pub fn get_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.values[id]
    }

    /// Looks a parameter up by name.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.names.iter().position(|n| n == name)
    }

    /// Iterates over `(name, value)` pairs in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(&self.values)
    }

    /// All values, mutable, in id order.
    pub fn values_mut(&mut self) -> &mut [Tensor] {
        &mut self.values
    }

    /// All values in id order.
    pub fn values(&self) -> &[Tensor] {
        &self.values
    }
}
