//! Classification by the chat model: the prompt that asks for one label of a set, the checks a
//! label set must pass, and the ranking of the labels by the model's probability of answering
//! each (every label's whole token sequence and the end of the turn, scored in one worker
//! request), calibrated: each label's log-probability after the text minus its log-probability
//! after a text that says nothing ([`CONTENT_FREE`]), so a label the model favours whatever the
//! text (measured: a 135M model answered "cooking" for sports, politics and science) does not
//! win by its prior (contextual calibration, Zhao et al. 2021). No free text is sampled, so the
//! answer is always one of the labels: the strictest form of a grammar of alternatives, without
//! the bias of choosing token by token (where a label's likely first token can lead into an
//! unlikely rest).

use serde::Serialize;

use super::protocol::Prompt;

/// The text whose label scores are the model's prior over a label set.
pub const CONTENT_FREE: &str = "N/A";

/// Bytes of one label.
pub const MAX_LABEL_BYTES: usize = 64;

/// Checks a label set: 1..=`max` distinct labels, each 1..=[`MAX_LABEL_BYTES`] bytes of text
/// without control characters or surrounding spaces.
pub fn check_labels(labels: &[String], max: usize) -> Result<(), String> {
    if labels.is_empty() {
        return Err("give at least one label".into());
    }
    if labels.len() > max {
        return Err(format!("{} labels, more than inference.max_labels ({max})", labels.len()));
    }
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() || label.len() > MAX_LABEL_BYTES {
            return Err(format!("labels[{i}] must be 1..={MAX_LABEL_BYTES} bytes, got {}", label.len()));
        }
        if label.trim() != label || label.chars().any(char::is_control) {
            return Err(format!("labels[{i}] {label:?} has surrounding spaces or control characters"));
        }
        if labels[..i].contains(label) {
            return Err(format!("labels[{i}] {label:?} is given twice"));
        }
    }
    Ok(())
}

/// The chat prompt asking for one of `labels` for `text`.
pub fn prompt(text: &str, labels: &[String]) -> Prompt {
    let list = labels.join(", ");
    Prompt {
        chat: true,
        system: Some(format!(
            "You are a text classifier. Answer with exactly one of these labels and nothing else: {list}."
        )),
        user: format!("Text: {text}\nLabels: {list}\nWhich label fits the text best?"),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelScore {
    pub label: String,
    /// The label's share of the set's calibrated probability (they sum to 1).
    pub probability: f64,
    /// The model's natural-log probability of answering exactly this label (uncalibrated).
    pub logprob: f64,
}

/// The labels by calibrated score, highest first (ties keep the given order); `probability`
/// is the softmax of `calibrated` over the set.
pub fn ranked(labels: &[String], logprobs: &[f64], calibrated: &[f64]) -> Vec<LabelScore> {
    let max = calibrated.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = calibrated.iter().map(|c| (c - max).exp()).sum();
    let mut scores: Vec<(f64, LabelScore)> = labels
        .iter()
        .zip(logprobs.iter().zip(calibrated))
        .map(|(label, (&logprob, &c))| {
            let probability = if total > 0.0 { (c - max).exp() / total } else { 0.0 };
            (c, LabelScore { label: label.clone(), probability, logprob })
        })
        .collect();
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
    scores.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn label_sets_are_checked() {
        assert!(check_labels(&labels(&["sports", "politics"]), 4).is_ok());
        assert!(check_labels(&[], 4).unwrap_err().contains("at least one"));
        assert!(check_labels(&labels(&["a", "b", "c"]), 2).unwrap_err().contains("max_labels"));
        assert!(check_labels(&labels(&["a", "a"]), 4).unwrap_err().contains("twice"));
        assert!(check_labels(&labels(&[" a"]), 4).unwrap_err().contains("spaces"));
        assert!(check_labels(&labels(&["a\nb"]), 4).unwrap_err().contains("control"));
        assert!(check_labels(&labels(&[""]), 4).unwrap_err().contains("1..="));
        assert!(check_labels(&[("x".repeat(65))], 4).unwrap_err().contains("1..=64"));
    }

    #[test]
    fn ranking_orders_by_calibrated_score_and_normalises() {
        let r = ranked(&labels(&["a", "b", "c"]), &[-3.0, -1.0, -2.0], &[-3.0, -1.0, -2.0]);
        assert_eq!(r.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(), ["b", "c", "a"]);
        let total: f64 = r.iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-12);
        // e^-1 / e^-2 = e
        assert!((r[0].probability / r[1].probability - std::f64::consts::E).abs() < 1e-9);
        assert_eq!(r[0].logprob, -1.0);
        // "b" is likelier, but the model prefers it whatever the text: "a" wins once calibrated.
        let r = ranked(&labels(&["a", "b"]), &[-2.0, -1.0], &[0.5, -0.5]);
        assert_eq!(r[0].label, "a");
        assert_eq!(r[0].logprob, -2.0, "the uncalibrated log-probability is reported");
    }
}
