//! Incremental aggregators that window operators fold records into.
//!
//! An [`Aggregator`] says how to start an accumulator, add a record to it, merge two
//! accumulators (session windows merge when a record bridges two sessions) and read a
//! result out of it. `finish` takes the accumulator by reference: a window keeps its
//! accumulator after emitting (early results, late corrections), so reading must not
//! consume it.
//!
//! Built in: [`Count`], [`Sum`], [`Min`], [`Max`], [`Mean`], [`TopK`] and the
//! whole-window [`Collect`], which keeps every record and hands them all to a function.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What an accumulator must be: serializable, so window state can be checkpointed.
pub trait State: Serialize + DeserializeOwned + 'static {}
impl<S: Serialize + DeserializeOwned + 'static> State for S {}

/// An incremental aggregation over records of type `D`.
pub trait Aggregator<D>: 'static {
    /// The running state for one key in one window. Serializable: it is what
    /// checkpoints write.
    type Acc: State;
    /// The result emitted for a key and window.
    type Out;
    /// A fresh accumulator, before any record.
    fn create(&self) -> Self::Acc;
    /// Adds one record.
    fn add(&self, acc: &mut Self::Acc, record: &D);
    /// Merges `other` into `acc`, as if `other`'s records had been added to `acc`.
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// Reads the result out of an accumulator.
    fn finish(&self, acc: &Self::Acc) -> Self::Out;
    /// Merges `other` into `acc`, keeping `other` (rolling windows read the
    /// accumulators they keep this way). The default clones `other` and calls
    /// [`Aggregator::merge`]; override it when `other` can be read in place.
    fn merge_from(&self, acc: &mut Self::Acc, other: &Self::Acc)
    where
        Self::Acc: Clone,
    {
        self.merge(acc, other.clone());
    }
}

/// Counts records.
///
/// # Examples
/// ```
/// use freshet_operators::aggregate::{Aggregator, Count};
/// let mut acc = Aggregator::<&str>::create(&Count);
/// Count.add(&mut acc, &"x");
/// assert_eq!(Aggregator::<&str>::finish(&Count, &acc), 1);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<D> Aggregator<D> for Count {
    type Acc = u64;
    type Out = u64;
    fn create(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _: &D) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn finish(&self, acc: &u64) -> u64 {
        *acc
    }
}

macro_rules! by_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<D, F> {
            value: F,
            _record: PhantomData<fn(&D)>,
        }

        impl<D, F> $name<D, F> {
            /// Aggregates the value `value` reads from each record.
            pub fn new(value: F) -> Self {
                $name { value, _record: PhantomData }
            }
        }
    };
}

by_value!(
    /// Sums a value read from each record (wrapping on overflow is the caller's type's
    /// `+=`: use a wide type).
    ///
    /// # Examples
    /// ```
    /// use freshet_operators::aggregate::{Aggregator, Sum};
    /// let sum = Sum::new(|r: &(u8, i64)| r.1);
    /// let mut acc = sum.create();
    /// sum.add(&mut acc, &(0, 5));
    /// sum.add(&mut acc, &(0, -2));
    /// assert_eq!(sum.finish(&acc), 3);
    /// ```
    Sum
);

impl<D: 'static, V, F> Aggregator<D> for Sum<D, F>
where
    V: Default + Copy + std::ops::AddAssign + State,
    F: Fn(&D) -> V + 'static,
{
    type Acc = V;
    type Out = V;
    fn create(&self) -> V {
        V::default()
    }
    #[inline]
    fn add(&self, acc: &mut V, record: &D) {
        *acc += (self.value)(record);
    }
    fn merge(&self, acc: &mut V, other: V) {
        *acc += other;
    }
    fn finish(&self, acc: &V) -> V {
        *acc
    }
}

by_value!(
    /// The least value read from a record (`None` for a window with no records, which
    /// a window never emits).
    ///
    /// # Examples
    /// ```
    /// use freshet_operators::aggregate::{Aggregator, Min};
    /// let min = Min::new(|r: &u32| *r);
    /// let mut acc = min.create();
    /// min.add(&mut acc, &7);
    /// min.add(&mut acc, &3);
    /// assert_eq!(min.finish(&acc), Some(3));
    /// ```
    Min
);

impl<D: 'static, V, F> Aggregator<D> for Min<D, F>
where
    V: Ord + Clone + State,
    F: Fn(&D) -> V + 'static,
{
    type Acc = Option<V>;
    type Out = Option<V>;
    fn create(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, record: &D) {
        let v = (self.value)(record);
        if acc.as_ref().is_none_or(|a| v < *a) {
            *acc = Some(v);
        }
    }
    fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
        *acc = match (acc.take(), other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    fn finish(&self, acc: &Option<V>) -> Option<V> {
        acc.clone()
    }
}

by_value!(
    /// The greatest value read from a record.
    ///
    /// # Examples
    /// ```
    /// use freshet_operators::aggregate::{Aggregator, Max};
    /// let max = Max::new(|r: &u32| *r);
    /// let mut acc = max.create();
    /// max.add(&mut acc, &7);
    /// max.add(&mut acc, &3);
    /// assert_eq!(max.finish(&acc), Some(7));
    /// ```
    Max
);

impl<D: 'static, V, F> Aggregator<D> for Max<D, F>
where
    V: Ord + Clone + State,
    F: Fn(&D) -> V + 'static,
{
    type Acc = Option<V>;
    type Out = Option<V>;
    fn create(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, record: &D) {
        let v = (self.value)(record);
        if acc.as_ref().is_none_or(|a| v > *a) {
            *acc = Some(v);
        }
    }
    fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
        *acc = match (acc.take(), other) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    fn finish(&self, acc: &Option<V>) -> Option<V> {
        acc.clone()
    }
}

/// The mean of a window, exactly: the sum and the count, so results merge and compare
/// without floating-point rounding. [`MeanValue::mean`] gives the `f64`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct MeanValue {
    /// Sum of the values.
    pub sum: i128,
    /// Number of values.
    pub count: u64,
}

impl MeanValue {
    /// `sum / count` (NaN for no values).
    pub fn mean(&self) -> f64 {
        self.sum as f64 / self.count as f64
    }
}

by_value!(
    /// The mean of an integer value read from each record, as a [`MeanValue`].
    ///
    /// # Examples
    /// ```
    /// use freshet_operators::aggregate::{Aggregator, Mean};
    /// let mean = Mean::new(|r: &i64| *r);
    /// let mut acc = mean.create();
    /// mean.add(&mut acc, &1);
    /// mean.add(&mut acc, &4);
    /// assert_eq!(mean.finish(&acc).mean(), 2.5);
    /// ```
    Mean
);

impl<D: 'static, V, F> Aggregator<D> for Mean<D, F>
where
    V: Into<i128>,
    F: Fn(&D) -> V + 'static,
{
    type Acc = MeanValue;
    type Out = MeanValue;
    fn create(&self) -> MeanValue {
        MeanValue::default()
    }
    #[inline]
    fn add(&self, acc: &mut MeanValue, record: &D) {
        acc.sum += (self.value)(record).into();
        acc.count += 1;
    }
    fn merge(&self, acc: &mut MeanValue, other: MeanValue) {
        acc.sum += other.sum;
        acc.count += other.count;
    }
    fn finish(&self, acc: &MeanValue) -> MeanValue {
        *acc
    }
}

/// The `k` records with the greatest scores, best first (ties broken by the record, so
/// the result does not depend on arrival order).
///
/// # Examples
/// ```
/// use freshet_operators::aggregate::{Aggregator, TopK};
/// let top = TopK::new(2, |r: &(char, u32)| r.1);
/// let mut acc = top.create();
/// for r in [('a', 5), ('b', 9), ('c', 1), ('d', 7)] {
///     top.add(&mut acc, &r);
/// }
/// assert_eq!(top.finish(&acc), vec![('b', 9), ('d', 7)]);
/// ```
pub struct TopK<D, S, F> {
    k: usize,
    score: F,
    _types: PhantomData<fn(&D) -> S>,
}

impl<D, S, F> TopK<D, S, F> {
    /// Keeps the `k` records with the greatest `score`.
    pub fn new(k: usize, score: F) -> Self {
        TopK {
            k,
            score,
            _types: PhantomData,
        }
    }
}

impl<D: Ord + Clone + State, S: Ord + State, F: Fn(&D) -> S + 'static> Aggregator<D>
    for TopK<D, S, F>
{
    /// Kept sorted best first, at most `k` long.
    type Acc = Vec<(S, D)>;
    type Out = Vec<D>;
    fn create(&self) -> Vec<(S, D)> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<(S, D)>, record: &D) {
        let score = (self.score)(record);
        // Best first: descending by (score, record).
        let at = acc.partition_point(|(s, d)| (s, d) > (&score, record));
        if at < self.k {
            if acc.len() == self.k {
                acc.pop();
            }
            acc.insert(at, (score, record.clone()));
        }
    }
    fn merge(&self, acc: &mut Vec<(S, D)>, other: Vec<(S, D)>) {
        acc.extend(other);
        acc.sort_unstable_by(|a, b| b.cmp(a));
        acc.truncate(self.k);
    }
    fn finish(&self, acc: &Vec<(S, D)>) -> Vec<D> {
        acc.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// The whole-window variant: keeps every record of the window and hands them all to
/// `finish` at emission. Records are in arrival order, which is not deterministic
/// across worker counts: sort inside `finish` if order matters.
///
/// # Examples
/// ```
/// use freshet_operators::aggregate::{Aggregator, Collect};
/// let median = Collect::new(|rs: &[u32]| {
///     let mut v = rs.to_vec();
///     v.sort();
///     v[v.len() / 2]
/// });
/// let mut acc = median.create();
/// for r in [5, 1, 9] {
///     median.add(&mut acc, &r);
/// }
/// assert_eq!(median.finish(&acc), 5);
/// ```
pub struct Collect<D, O, F> {
    finish: F,
    _types: PhantomData<fn(&[D]) -> O>,
}

impl<D, O, F> Collect<D, O, F> {
    /// Applies `finish` to all the records of a key's window.
    pub fn new(finish: F) -> Self {
        Collect {
            finish,
            _types: PhantomData,
        }
    }
}

impl<D: Clone + State, O: 'static, F: Fn(&[D]) -> O + 'static> Aggregator<D> for Collect<D, O, F> {
    type Acc = Vec<D>;
    type Out = O;
    fn create(&self) -> Vec<D> {
        Vec::new()
    }
    #[inline]
    fn add(&self, acc: &mut Vec<D>, record: &D) {
        acc.push(record.clone());
    }
    fn merge(&self, acc: &mut Vec<D>, other: Vec<D>) {
        acc.extend(other);
    }
    fn finish(&self, acc: &Vec<D>) -> O {
        (self.finish)(acc)
    }
}

/// A user fold as an aggregator: `A::default()`, then `fold` per record.
///
/// A fold has no merge: it serves windows that never merge (tumbling, sliding). Session
/// windows need a real [`Aggregator`].
pub struct Fold<A, F> {
    fold: F,
    _acc: PhantomData<fn() -> A>,
}

impl<A, F> Fold<A, F> {
    /// Folds with `fold`, starting from `A::default()`.
    pub fn new(fold: F) -> Self {
        Fold {
            fold,
            _acc: PhantomData,
        }
    }
}

impl<D, A: Default + Clone + State, F: Fn(&mut A, &D) + 'static> Aggregator<D> for Fold<A, F> {
    type Acc = A;
    type Out = A;
    fn create(&self) -> A {
        A::default()
    }
    #[inline]
    fn add(&self, acc: &mut A, record: &D) {
        (self.fold)(acc, record);
    }
    fn merge(&self, _: &mut A, _: A) {
        unreachable!("a fold has no merge; only session windows merge accumulators")
    }
    fn finish(&self, acc: &A) -> A {
        acc.clone()
    }
}
