//! The dependency graph of a task's steps, by step index.
//!
//! A [`StepDag`] is built from each step's parent list (the indices of the steps it depends on)
//! and is acyclic by construction: [`StepDag::from_parents`] rejects self-dependencies, repeated
//! parents, out-of-range indices and cycles (returning the cycle's path). After that, the
//! questions the engine asks are cheap: a step's parents (is it ready?), its children (what may
//! become ready when it completes?), its ancestors (whose results go into `previous_results`),
//! and a deterministic topological order.
//!
//! Indices are positions in the template's `steps` list. Every list this module returns is sorted
//! ascending by index unless its doc says otherwise, so results are deterministic.

use std::collections::BTreeSet;

/// Why a parent list does not describe a DAG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// A step names a parent index that is not a step.
    #[error("step {step} depends on step {parent}, but there are only {len} steps")]
    ParentOutOfRange {
        /// The step whose parent list is wrong.
        step: usize,
        /// The out-of-range parent index.
        parent: usize,
        /// The number of steps.
        len: usize,
    },
    /// A step lists itself as a parent.
    #[error("step {step} depends on itself")]
    SelfDependency {
        /// The step that depends on itself.
        step: usize,
    },
    /// A step lists the same parent twice.
    #[error("step {step} lists step {parent} as a dependency more than once")]
    DuplicateParent {
        /// The step whose parent list repeats an entry.
        step: usize,
        /// The repeated parent.
        parent: usize,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {}", format_cycle(path))]
    Cycle {
        /// The cycle, each step depending on the next; the first index is repeated at the end
        /// (`[a, b, c, a]` means a depends on b, b on c, c on a). It starts at the lowest index
        /// in the cycle.
        path: Vec<usize>,
    },
}

fn format_cycle(path: &[usize]) -> String {
    path.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// A validated, acyclic dependency graph of steps identified by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDag {
    parents: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
    topological_order: Vec<usize>,
}

impl StepDag {
    /// Builds the graph from each step's parents: `parents[i]` holds the indices step `i`
    /// depends on (in any order).
    ///
    /// # Errors
    ///
    /// [`DagError`] when an index is out of range, a step depends on itself, a parent is listed
    /// twice, or the dependencies form a cycle (the error carries the cycle's path).
    pub fn from_parents(parents: Vec<Vec<usize>>) -> Result<Self, DagError> {
        let len = parents.len();
        let mut sorted_parents = Vec::with_capacity(len);
        for (step, list) in parents.into_iter().enumerate() {
            let mut seen = BTreeSet::new();
            for &parent in &list {
                if parent >= len {
                    return Err(DagError::ParentOutOfRange { step, parent, len });
                }
                if parent == step {
                    return Err(DagError::SelfDependency { step });
                }
                if !seen.insert(parent) {
                    return Err(DagError::DuplicateParent { step, parent });
                }
            }
            sorted_parents.push(seen.into_iter().collect::<Vec<_>>());
        }
        if let Some(path) = find_cycle(&sorted_parents) {
            return Err(DagError::Cycle { path });
        }
        let mut children = vec![Vec::new(); len];
        for (step, list) in sorted_parents.iter().enumerate() {
            for &parent in list {
                children[parent].push(step);
            }
        }
        let topological_order = topological_order(&sorted_parents, &children);
        Ok(Self {
            parents: sorted_parents,
            children,
            topological_order,
        })
    }

    /// The number of steps.
    #[must_use]
    pub fn len(&self) -> usize {
        self.parents.len()
    }

    /// Whether the graph has no steps.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }

    /// The steps `step` depends on directly.
    ///
    /// # Panics
    ///
    /// When `step` is not an index of this graph.
    #[must_use]
    pub fn parents(&self, step: usize) -> &[usize] {
        &self.parents[step]
    }

    /// The steps that depend directly on `step`.
    ///
    /// # Panics
    ///
    /// When `step` is not an index of this graph.
    #[must_use]
    pub fn children(&self, step: usize) -> &[usize] {
        &self.children[step]
    }

    /// Steps with no dependencies: the ones that are ready when a task starts.
    #[must_use]
    pub fn roots(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&step| self.parents[step].is_empty())
            .collect()
    }

    /// Steps nothing depends on: a task is finished when all of them are.
    #[must_use]
    pub fn leaves(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&step| self.children[step].is_empty())
            .collect()
    }

    /// Every step, each after all of its parents. Among steps whose parents are all placed, the
    /// lowest index comes first, so the order is deterministic (and equals file order when the
    /// file lists parents before children).
    #[must_use]
    pub fn topological_order(&self) -> &[usize] {
        &self.topological_order
    }

    /// Every step `step` depends on, directly or transitively, sorted by index. These are the
    /// steps whose results go into its `previous_results`.
    ///
    /// # Panics
    ///
    /// When `step` is not an index of this graph.
    #[must_use]
    pub fn ancestors(&self, step: usize) -> Vec<usize> {
        reachable(step, &self.parents)
    }

    /// Every step that depends on `step`, directly or transitively, sorted by index: the steps
    /// that can never run if `step` fails for good.
    ///
    /// # Panics
    ///
    /// When `step` is not an index of this graph.
    #[must_use]
    pub fn descendants(&self, step: usize) -> Vec<usize> {
        reachable(step, &self.children)
    }
}

/// All nodes reachable from `start` along `edges`, excluding `start`, sorted ascending.
fn reachable(start: usize, edges: &[Vec<usize>]) -> Vec<usize> {
    let mut visited = vec![false; edges.len()];
    let mut stack = edges[start].clone();
    while let Some(node) = stack.pop() {
        if !visited[node] {
            visited[node] = true;
            stack.extend(edges[node].iter().copied().filter(|&next| !visited[next]));
        }
    }
    (0..edges.len()).filter(|&node| visited[node]).collect()
}

/// Kahn's algorithm, always taking the lowest ready index. Requires an acyclic graph.
fn topological_order(parents: &[Vec<usize>], children: &[Vec<usize>]) -> Vec<usize> {
    let mut unplaced_parents: Vec<usize> = parents.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..parents.len())
        .filter(|&step| unplaced_parents[step] == 0)
        .collect();
    let mut order = Vec::with_capacity(parents.len());
    while let Some(step) = ready.pop_first() {
        order.push(step);
        for &child in &children[step] {
            unplaced_parents[child] -= 1;
            if unplaced_parents[child] == 0 {
                ready.insert(child);
            }
        }
    }
    order
}

/// Finds a dependency cycle, if there is one, following `parents` edges.
///
/// Returns the cycle as a path where each step depends on the next and the first step is repeated
/// at the end, rotated to start at its lowest index. The search visits steps and their parents in
/// ascending index order, so the same input always reports the same cycle. Indices must be in
/// range.
#[must_use]
pub fn find_cycle(parents: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::Unvisited; parents.len()];
    for start in 0..parents.len() {
        if marks[start] != Mark::Unvisited {
            continue;
        }
        // Depth-first search with an explicit stack of (node, next parent position).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&(node, next)) = path.last() {
            if let Some(&parent) = parents[node].get(next) {
                let top = path.len() - 1;
                path[top].1 += 1;
                match marks[parent] {
                    Mark::Unvisited => {
                        marks[parent] = Mark::OnPath;
                        path.push((parent, 0));
                    }
                    Mark::OnPath => {
                        let from = path
                            .iter()
                            .position(|&(step, _)| step == parent)
                            .expect("a node marked on-path is on the path");
                        let mut cycle: Vec<usize> = path[from..].iter().map(|&(s, _)| s).collect();
                        let lowest = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|&(_, &step)| step)
                            .map_or(0, |(position, _)| position);
                        cycle.rotate_left(lowest);
                        cycle.push(cycle[0]);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// a(0) -> b(1), c(2) -> d(3)
    fn diamond() -> StepDag {
        StepDag::from_parents(vec![vec![], vec![0], vec![0], vec![1, 2]]).unwrap()
    }

    #[test]
    fn diamond_structure() {
        let dag = diamond();
        assert_eq!(dag.len(), 4);
        assert_eq!(dag.roots(), vec![0]);
        assert_eq!(dag.leaves(), vec![3]);
        assert_eq!(dag.parents(3), &[1, 2]);
        assert_eq!(dag.children(0), &[1, 2]);
        assert_eq!(dag.topological_order(), &[0, 1, 2, 3]);
        assert_eq!(dag.ancestors(3), vec![0, 1, 2]);
        assert_eq!(dag.ancestors(1), vec![0]);
        assert_eq!(dag.ancestors(0), Vec::<usize>::new());
        assert_eq!(dag.descendants(0), vec![1, 2, 3]);
        assert_eq!(dag.descendants(2), vec![3]);
        assert_eq!(dag.descendants(3), Vec::<usize>::new());
    }

    #[test]
    fn topological_order_puts_parents_first_even_when_listed_later() {
        // 0 depends on 3, 3 depends on 1, 2 is independent.
        let dag = StepDag::from_parents(vec![vec![3], vec![], vec![], vec![1]]).unwrap();
        assert_eq!(dag.topological_order(), &[1, 2, 3, 0]);
        assert_eq!(dag.roots(), vec![1, 2]);
        assert_eq!(dag.leaves(), vec![0, 2]);
        assert_eq!(dag.ancestors(0), vec![1, 3]);
    }

    #[test]
    fn parents_are_sorted_whatever_the_input_order() {
        let dag = StepDag::from_parents(vec![vec![], vec![], vec![1, 0]]).unwrap();
        assert_eq!(dag.parents(2), &[0, 1]);
    }

    #[test]
    fn descendants_skip_unrelated_branches() {
        // 0 -> 1 -> 2, 0 -> 3, 4 -> 3
        let dag =
            StepDag::from_parents(vec![vec![], vec![0], vec![1], vec![0, 4], vec![]]).unwrap();
        assert_eq!(dag.descendants(1), vec![2]);
        assert_eq!(dag.descendants(4), vec![3]);
        assert_eq!(dag.ancestors(3), vec![0, 4]);
    }

    #[test]
    fn three_step_cycle_reports_its_path_from_lowest_index() {
        // 0 independent; 1 depends on 3, 3 on 2, 2 on 1.
        let err = StepDag::from_parents(vec![vec![], vec![3], vec![1], vec![2]]).unwrap_err();
        assert_eq!(
            err,
            DagError::Cycle {
                path: vec![1, 3, 2, 1]
            }
        );
        assert_eq!(err.to_string(), "dependency cycle: 1 -> 3 -> 2 -> 1");
    }

    #[test]
    fn cycle_reached_from_outside_is_reported_without_the_lead_in() {
        // 0 depends on 1; 1 and 2 depend on each other.
        let path = find_cycle(&[vec![1], vec![2], vec![1]]).unwrap();
        assert_eq!(path, vec![1, 2, 1]);
    }

    #[test]
    fn acyclic_graph_has_no_cycle() {
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0], vec![1, 2]]), None);
        assert_eq!(find_cycle(&[]), None);
    }

    #[test]
    fn rejects_self_duplicate_and_out_of_range_parents() {
        assert_eq!(
            StepDag::from_parents(vec![vec![], vec![1]]).unwrap_err(),
            DagError::SelfDependency { step: 1 }
        );
        assert_eq!(
            StepDag::from_parents(vec![vec![], vec![0, 0]]).unwrap_err(),
            DagError::DuplicateParent { step: 1, parent: 0 }
        );
        assert_eq!(
            StepDag::from_parents(vec![vec![5]]).unwrap_err(),
            DagError::ParentOutOfRange {
                step: 0,
                parent: 5,
                len: 1
            }
        );
    }

    #[test]
    fn empty_graph_is_valid() {
        let dag = StepDag::from_parents(Vec::new()).unwrap();
        assert!(dag.is_empty());
        assert!(dag.roots().is_empty());
        assert!(dag.topological_order().is_empty());
    }

    /// Random DAGs: a random lower-triangular parent relation, relabelled by a random
    /// permutation so that parents are not always listed first.
    fn random_dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..24)
            .prop_flat_map(|n| {
                (
                    prop::collection::vec(prop::collection::vec(any::<bool>(), n), n),
                    Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                )
            })
            .prop_map(|(edges, label)| {
                let mut parents = vec![Vec::new(); label.len()];
                for (child, row) in edges.iter().enumerate() {
                    for (parent, &edge) in row.iter().enumerate().take(child) {
                        if edge {
                            parents[label[child]].push(label[parent]);
                        }
                    }
                }
                parents
            })
    }

    proptest! {
        #[test]
        fn random_dags_are_consistent(parents in random_dag()) {
            let dag = StepDag::from_parents(parents.clone()).unwrap();
            let n = parents.len();
            // The topological order is a permutation with every parent before its child.
            let mut position = vec![usize::MAX; n];
            for (at, &step) in dag.topological_order().iter().enumerate() {
                prop_assert_eq!(position[step], usize::MAX);
                position[step] = at;
            }
            for step in 0..n {
                for &parent in dag.parents(step) {
                    prop_assert!(position[parent] < position[step]);
                    prop_assert!(dag.children(parent).contains(&step));
                }
                prop_assert_eq!(dag.parents(step).is_empty(), dag.roots().contains(&step));
                prop_assert_eq!(dag.children(step).is_empty(), dag.leaves().contains(&step));
                // Ancestors and descendants mirror each other and exclude the step itself.
                for other in 0..n {
                    prop_assert_eq!(
                        dag.ancestors(step).contains(&other),
                        dag.descendants(other).contains(&step)
                    );
                }
                prop_assert!(!dag.ancestors(step).contains(&step));
            }
        }

        #[test]
        fn a_back_edge_is_reported_as_a_real_cycle(parents in random_dag(), pick in any::<usize>()) {
            let dag = StepDag::from_parents(parents.clone()).unwrap();
            // Any step with a descendant: making it depend on that descendant closes a cycle.
            let candidates: Vec<(usize, usize)> = (0..parents.len())
                .flat_map(|step| dag.descendants(step).into_iter().map(move |d| (step, d)))
                .collect();
            prop_assume!(!candidates.is_empty());
            let (step, descendant) = candidates[pick % candidates.len()];
            let mut cyclic = parents.clone();
            cyclic[step].push(descendant);
            let Err(DagError::Cycle { path }) = StepDag::from_parents(cyclic.clone()) else {
                return Err(TestCaseError::fail("expected a cycle"));
            };
            prop_assert!(path.len() >= 3);
            prop_assert_eq!(path.first(), path.last());
            prop_assert_eq!(path[0], *path.iter().min().unwrap());
            for pair in path.windows(2) {
                prop_assert!(cyclic[pair[0]].contains(&pair[1]), "{:?} is not an edge", pair);
            }
            let inner = &path[..path.len() - 1];
            let mut unique = inner.to_vec();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), inner.len());
        }
    }

    #[test]
    fn long_chain_does_not_overflow_the_stack() {
        let parents: Vec<Vec<usize>> = (0..100_000)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let dag = StepDag::from_parents(parents).unwrap();
        assert_eq!(dag.topological_order().len(), 100_000);
        assert_eq!(dag.descendants(0).len(), 99_999);
    }
}
