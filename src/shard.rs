//! Sharding a sweep across machines: shard I of N runs the seeds `s` with `s % N == I`, so
//! the N shards of a range cover it exactly once whatever the range, and a CI matrix or a
//! Kubernetes Indexed Job (`auto/N` reads `JOB_COMPLETION_INDEX`) can split a sweep.

use std::ops::Range;

/// The environment variable a Kubernetes Indexed Job sets to each pod's index.
pub const JOB_INDEX_VARIABLE: &str = "JOB_COMPLETION_INDEX";

/// One machine's share of a sweep: the seeds `s` with `s % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// `I/N`, or `auto/N` with the index read from `JOB_COMPLETION_INDEX`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        Shard::parse_with(text, std::env::var(JOB_INDEX_VARIABLE).ok())
    }

    fn parse_with(text: &str, job_index: Option<String>) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("expected I/N (e.g. 0/4) or auto/N, found `{text}`"))?;
        let count: u64 = count
            .parse()
            .map_err(|_| format!("`{count}` is not a number of shards"))?;
        if count == 0 {
            return Err("the number of shards must be at least 1".to_string());
        }
        let index: u64 = if index == "auto" {
            let job_index = job_index.ok_or_else(|| {
                format!(
                    "auto/{count} reads the shard index from {JOB_INDEX_VARIABLE} (set in a \
                     Kubernetes Indexed Job), which is not set"
                )
            })?;
            job_index.trim().parse().map_err(|_| {
                format!("{JOB_INDEX_VARIABLE}={job_index} is not a shard index (a whole number)")
            })?
        } else {
            index
                .parse()
                .map_err(|_| format!("`{index}` is not a shard index (a whole number)"))?
        };
        if index >= count {
            return Err(format!(
                "shard index {index} is out of range: with {count} shards it must be 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// This shard's seeds of `range`, in increasing order.
    pub fn seeds(&self, range: Range<u64>) -> ShardSeeds {
        // The distance from `range.start` up to the next seed of this shard, without overflow
        // for any count.
        let remainder = range.start % self.count;
        let offset = match self.index >= remainder {
            true => self.index - remainder,
            false => self.count - (remainder - self.index),
        };
        ShardSeeds {
            first: range.start.saturating_add(offset),
            step: self.count,
            end: range.end,
        }
    }
}

/// An arithmetic progression of seeds: `first, first + step, …` below `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSeeds {
    first: u64,
    step: u64,
    end: u64,
}

impl ShardSeeds {
    pub fn len(&self) -> u64 {
        if self.first >= self.end {
            0
        } else {
            (self.end - 1 - self.first) / self.step + 1
        }
    }

    /// The `k`th seed (from 0).
    pub fn nth(&self, k: u64) -> Option<u64> {
        (k < self.len()).then(|| self.first + k * self.step)
    }

    #[cfg(test)]
    fn all(&self) -> Vec<u64> {
        (0..self.len()).filter_map(|k| self.nth(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_a_range_exactly() {
        for count in 1..7u64 {
            for range in [0..100u64, 3..17, 5..6, 9..10] {
                let mut all: Vec<u64> = (0..count)
                    .flat_map(|index| Shard { index, count }.seeds(range.clone()).all())
                    .collect();
                all.sort();
                assert_eq!(
                    all,
                    range.clone().collect::<Vec<_>>(),
                    "{count} shards of {range:?}"
                );
            }
        }
        let shard = Shard { index: 1, count: 4 };
        assert_eq!(shard.seeds(0..10).all(), vec![1, 5, 9]);
        assert_eq!(shard.seeds(6..10).all(), vec![9]);
        assert_eq!(shard.seeds(2..5).len(), 0);
        let huge = Shard {
            index: u64::MAX - 1,
            count: u64::MAX,
        };
        assert_eq!(huge.seeds(3..u64::MAX).all(), vec![u64::MAX - 1]);
        assert_eq!(huge.seeds(0..5).len(), 0);
    }

    #[test]
    fn shard_parsing_names_the_problem() {
        assert_eq!(
            Shard::parse_with("2/5", None),
            Ok(Shard { index: 2, count: 5 })
        );
        assert_eq!(
            Shard::parse_with("auto/5", Some("4".to_string())),
            Ok(Shard { index: 4, count: 5 })
        );
        let cases = [
            ("5/5", None, "out of range"),
            ("0/0", None, "at least 1"),
            ("1", None, "expected I/N"),
            ("x/2", None, "not a shard index"),
            ("1/y", None, "not a number of shards"),
            ("auto/3", None, "JOB_COMPLETION_INDEX"),
            ("auto/3", Some("3"), "out of range"),
            ("auto/3", Some("abc"), "JOB_COMPLETION_INDEX=abc"),
        ];
        for (text, job, expected) in cases {
            let error = Shard::parse_with(text, job.map(str::to_string)).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
