//! Where two histories of one run first differ. The determinism self-check compares a run with
//! a rerun by trace hash; when the hashes differ, [`first_divergence`] finds the first record
//! that differs, which is where a person starts looking (a `HashMap` iterated, a `select!`
//! without `biased;`, a clock or RNG read outside the seed).

use crate::{History, Record};

/// Where two histories of the same run first differ. Records are compared as the JSON lines the
/// trace hash covers, so a divergence here is exactly a hash difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the first differing record (0-based, as in a violation's witness).
    pub index: usize,
    /// The record at `index` in each history; `None` where that history has already ended.
    pub left: Option<String>,
    pub right: Option<String>,
}

impl Divergence {
    /// A few lines a person can read: the index and both versions, labelled.
    pub fn describe(&self, left_label: &str, right_label: &str) -> String {
        let version = |record: &Option<String>| match record {
            Some(line) => line.clone(),
            None => "(the history has already ended)".to_string(),
        };
        let width = left_label.len().max(right_label.len());
        format!(
            "first diverging record: [{}]\n  {left_label:<width$}  {}\n  {right_label:<width$}  {}",
            self.index,
            version(&self.left),
            version(&self.right),
        )
    }
}

/// The first record at which `left` and `right` differ, or `None` when they are identical.
/// When one history is a prefix of the other, the divergence is at the shorter one's end.
pub fn first_divergence(left: &History, right: &History) -> Option<Divergence> {
    let line = |record: Option<&Record>| {
        // Serialising a record cannot fail (see `History::to_jsonl`).
        record.map(|record| serde_json::to_string(record).expect("record serialises"))
    };
    let length = left.records.len().max(right.records.len());
    (0..length).find_map(|index| {
        let (a, b) = (left.records.get(index), right.records.get(index));
        if a == b {
            return None;
        }
        let (a, b) = (line(a), line(b));
        // Two records can differ as values yet serialise alike (e.g. -0.0 and 0.0); only bytes
        // reach the hash, so only bytes count.
        (a != b).then_some(Divergence {
            index,
            left: a,
            right: b,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entry, HarnessEvent, History, Node};
    use imsim_model::{ConvId, Event, Seq};

    fn history(cursors: &[u64]) -> History {
        let mut history = History::default();
        history.push(0, Node::Harness, Entry::Harness(HarnessEvent::RunEnded));
        for (i, cursor) in cursors.iter().enumerate() {
            let event = Event::CursorAdvanced {
                conv: ConvId(1),
                cursor: Seq(*cursor),
            };
            history.push(10 * i as u64, Node::Server, Entry::Protocol(event));
        }
        history
    }

    #[test]
    fn identical_histories_do_not_diverge() {
        assert_eq!(
            first_divergence(&history(&[1, 2, 3]), &history(&[1, 2, 3])),
            None
        );
        assert_eq!(
            first_divergence(&History::default(), &History::default()),
            None
        );
    }

    #[test]
    fn the_first_differing_record_is_found_with_both_versions() {
        let divergence = first_divergence(&history(&[1, 2, 3, 4]), &history(&[1, 2, 9, 4]))
            .expect("they differ");
        assert_eq!(
            divergence.index, 3,
            "record 0 is run_ended, cursors start at 1"
        );
        assert!(divergence
            .left
            .as_deref()
            .unwrap()
            .contains(r#""cursor":3"#));
        assert!(divergence
            .right
            .as_deref()
            .unwrap()
            .contains(r#""cursor":9"#));
        let text = divergence.describe("run 1", "run 2 (child)");
        assert!(text.starts_with("first diverging record: [3]"), "{text}");
        assert!(text.contains(r#"run 1          {"t_ms":20"#), "{text}");
        assert!(text.contains(r#""cursor":9"#), "{text}");
    }

    #[test]
    fn a_prefix_diverges_where_it_ends() {
        let divergence =
            first_divergence(&history(&[1, 2]), &history(&[1, 2, 3])).expect("they differ");
        assert_eq!(divergence.index, 3);
        assert_eq!(divergence.left, None);
        assert!(divergence.describe("a", "b").contains("already ended"));
    }
}
