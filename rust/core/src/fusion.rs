//! Fusing rankings of the same documents from different indexes into one (HYBRID
//! search): each ranking's scores become units, and a document's fused score is the
//! weighted sum of its units over the rankings that hold it.

use std::cmp::Ordering;

use crate::error::{Error, Result};

/// Documents (by key) with their scores, best first.
pub struct Ranking<'a> {
    pub keys: &'a [u64],
    pub scores: &'a [f64],
    /// For min-max units: the scale spans at least this fraction of a positive top
    /// score (its bottom is at most `top * (1 - min_span)`), in [0, 1]. With 0, the
    /// lowest score is 0 and the top 1 however close they are; a larger span keeps a
    /// near-tie among few candidates a near-tie.
    pub min_span: f64,
}

/// How a ranking's scores become units.
#[derive(Clone, Copy, Debug)]
pub enum Units {
    /// Min-max scaled to [0, 1] over the ranking (all 1 when every score is equal).
    MinMax,
    /// `1 / (k + rank)` with ranks from 1 (reciprocal-rank fusion); the scores are unused.
    ReciprocalRank(f64),
}

/// Every key of the rankings with `sum over rankings of weight * unit`, best first,
/// ties by lower key. A key's units are added in the order of the rankings.
pub fn fuse(rankings: &[Ranking<'_>], weights: &[f64], units: Units) -> Result<Vec<(u64, f64)>> {
    if weights.len() != rankings.len() {
        let msg = format!("{} weights for {} rankings", weights.len(), rankings.len());
        return Err(Error::invalid("weights", msg));
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        return Err(Error::invalid("weights", format!("non-finite weight {w}")));
    }
    if let Units::ReciprocalRank(k) = units {
        if !(k.is_finite() && k >= 0.0) {
            return Err(Error::invalid("rrf_k", format!("expected k >= 0, got {k}")));
        }
    }
    for (i, r) in rankings.iter().enumerate() {
        if r.keys.len() != r.scores.len() {
            let msg = format!("{} keys and {} scores", r.keys.len(), r.scores.len());
            return Err(Error::invalid(format!("rankings[{i}]"), msg));
        }
        if let Some(s) = r.scores.iter().find(|s| !s.is_finite()) {
            let msg = format!("non-finite score {s}");
            return Err(Error::invalid(format!("rankings[{i}]"), msg));
        }
        if !(0.0..=1.0).contains(&r.min_span) {
            let msg = format!("min_span must be in [0, 1], got {}", r.min_span);
            return Err(Error::invalid(format!("rankings[{i}]"), msg));
        }
    }
    let mut parts: Vec<(u64, f64)> =
        Vec::with_capacity(rankings.iter().map(|r| r.keys.len()).sum());
    for (r, &weight) in rankings.iter().zip(weights) {
        match units {
            Units::MinMax => {
                let hi = r.scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let floor = hi - (hi * r.min_span).max(0.0);
                let lo = r.scores.iter().copied().fold(floor, f64::min);
                let span = hi - lo;
                for (&key, &s) in r.keys.iter().zip(r.scores) {
                    let unit = if span > 0.0 { (s - lo) / span } else { 1.0 };
                    parts.push((key, weight * unit));
                }
            }
            Units::ReciprocalRank(k) => {
                for (rank, &key) in r.keys.iter().enumerate() {
                    parts.push((key, weight * (1.0 / (k + rank as f64 + 1.0))));
                }
            }
        }
    }
    // A stable sort keeps each key's parts in ranking order for the sums.
    parts.sort_by_key(|&(key, _)| key);
    let mut fused: Vec<(u64, f64)> = Vec::with_capacity(parts.len());
    for (key, part) in parts {
        match fused.last_mut() {
            Some((last, sum)) if *last == key => *sum += part,
            _ => fused.push((key, part)),
        }
    }
    // Scores are finite, so only an overflow could make them incomparable.
    fused.sort_by(|a, b| (b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal)).then(a.0.cmp(&b.0)));
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking<'a>(keys: &'a [u64], scores: &'a [f64]) -> Ranking<'a> {
        Ranking {
            keys,
            scores,
            min_span: 0.0,
        }
    }

    #[test]
    fn a_min_span_keeps_a_near_tie_near() {
        // Two documents that match one common word alike: 0.19 and 0.17.
        let (keys, scores) = ([1, 2], [0.19, 0.17]);
        let plain = fuse(&[ranking(&keys, &scores)], &[1.0], Units::MinMax).unwrap();
        assert_eq!(plain, vec![(1, 1.0), (2, 0.0)]);
        let spanned = Ranking {
            min_span: 0.5,
            ..ranking(&keys, &scores)
        };
        let fused = fuse(&[spanned], &[1.0], Units::MinMax).unwrap();
        assert_eq!(fused[0], (1, 1.0));
        assert!((fused[1].1 - (0.17 - 0.095) / 0.095).abs() < 1e-12);
        // A ranking that spans more than that already is scaled as before.
        let (wide, wide_keys) = ([10.0, 2.0], [3, 4]);
        let spread = Ranking {
            min_span: 0.5,
            ..ranking(&wide_keys, &wide)
        };
        assert_eq!(
            fuse(&[spread], &[1.0], Units::MinMax).unwrap(),
            vec![(3, 1.0), (4, 0.0)]
        );
        let bad = Ranking {
            min_span: 1.5,
            ..ranking(&keys, &scores)
        };
        let err = fuse(&[bad], &[1.0], Units::MinMax).unwrap_err().to_string();
        assert!(
            err.contains("rankings[0]") && err.contains("min_span"),
            "{err}"
        );
    }

    #[test]
    fn min_max_units_are_weighted_and_summed() {
        let (a, b) = ([1, 2], [0.9, 0.5]);
        let (c, d) = ([2, 3], [30.0, 10.0]);
        let fused = fuse(
            &[ranking(&a, &b), ranking(&c, &d)],
            &[1.0, 0.5],
            Units::MinMax,
        )
        .unwrap();
        assert_eq!(fused, vec![(1, 1.0), (2, 0.5), (3, 0.0)]);
    }

    #[test]
    fn equal_scores_are_all_one_and_ties_go_to_the_lower_key() {
        let (keys, scores) = ([9, 4, 7], [2.0, 2.0, 2.0]);
        let fused = fuse(
            &[ranking(&keys, &scores), ranking(&[], &[])],
            &[1.0, 1.0],
            Units::MinMax,
        );
        assert_eq!(fused.unwrap(), vec![(4, 1.0), (7, 1.0), (9, 1.0)]);
    }

    #[test]
    fn reciprocal_ranks_ignore_scores() {
        let (a, b) = ([1, 2], [0.0, 100.0]);
        let (c, d) = ([2, 3], [5.0, 5.0]);
        let fused = fuse(
            &[ranking(&a, &b), ranking(&c, &d)],
            &[1.0, 1.0],
            Units::ReciprocalRank(60.0),
        )
        .unwrap();
        let keys: Vec<u64> = fused.iter().map(|&(k, _)| k).collect();
        assert_eq!(keys, vec![2, 1, 3]);
        assert_eq!(fused[0].1, 1.0 / 62.0 + 1.0 / 61.0);
        assert_eq!(fused[1].1, 1.0 / 61.0);
    }

    #[test]
    fn units_of_a_key_add_in_ranking_order() {
        // Float addition is not associative: the sum must follow the rankings' order.
        let parts = [0.1, 0.2, 0.3];
        let rankings: Vec<Ranking<'_>> = parts
            .iter()
            .map(|p| ranking(&[5], std::slice::from_ref(p)))
            .collect();
        let fused = fuse(&rankings, &parts, Units::MinMax).unwrap();
        assert_eq!(fused, vec![(5, 0.1 + 0.2 + 0.3)]);
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert_eq!(fuse(&[], &[], Units::MinMax).unwrap(), vec![]);
    }

    #[test]
    fn bad_arguments_name_the_argument() {
        let err = |r: Result<Vec<(u64, f64)>>| r.unwrap_err().to_string();
        assert!(
            err(fuse(&[ranking(&[1, 2], &[1.0])], &[1.0], Units::MinMax)).contains("rankings[0]")
        );
        assert!(
            err(fuse(&[ranking(&[1], &[f64::NAN])], &[1.0], Units::MinMax)).contains("rankings[0]")
        );
        assert!(err(fuse(&[ranking(&[1], &[1.0])], &[], Units::MinMax)).contains("weights"));
        assert!(err(fuse(
            &[ranking(&[1], &[1.0])],
            &[f64::INFINITY],
            Units::MinMax
        ))
        .contains("weights"));
        let negative = Units::ReciprocalRank(-1.0);
        assert!(err(fuse(&[ranking(&[1], &[1.0])], &[1.0], negative)).contains("rrf_k"));
    }
}
