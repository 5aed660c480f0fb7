//! Property tests: the streaming accumulator equals the batch functions, and the metrics are ordered.
use deepconf_confidence::*;
use proptest::prelude::*;

fn confidences() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.0f64..25.0, 1..300)
}

fn config() -> impl Strategy<Value = ConfidenceConfig> {
    (1usize..64, 1usize..64, 1.0f64..=100.0).prop_map(|(window, tail, p)| {
        ConfidenceConfig::new()
            .with_window(window)
            .with_tail(tail)
            .with_bottom_percent(p)
    })
}

proptest! {
    #[test]
    fn streaming_equals_batch_for_every_metric(c in confidences(), cfg in config()) {
        let mut stream = StreamingConfidence::new(cfg.clone()).unwrap();
        let mut streamed_groups = Vec::new();
        for (i, &x) in c.iter().enumerate() {
            if let Some(g) = stream.push(x) { streamed_groups.push(g); }
            // Every prefix of the trace agrees, not only the finished trace.
            prop_assert_eq!(Ok(stream.summary()), summarize(&c[..=i], &cfg));
        }
        if c.len() >= cfg.window {
            prop_assert_eq!(Ok(streamed_groups), group_confidences(&c, cfg.window));
        } else {
            prop_assert!(streamed_groups.is_empty());
        }
    }

    #[test]
    fn streaming_from_top_logprobs_equals_batch(
        steps in prop::collection::vec(prop::collection::vec(-30.0f32..0.0, 1..25), 1..80),
        cfg in config(),
    ) {
        let mut stream = StreamingConfidence::new(cfg.clone()).unwrap();
        for s in &steps { stream.push_top_logprobs(s); }
        let per_token: Vec<f64> = steps.iter().map(|s| token_confidence(s, cfg.top_k)).collect();
        prop_assert_eq!(Ok(stream.summary()), summarize(&per_token, &cfg));
    }

    #[test]
    fn lowest_le_bottom_le_mean_of_groups(c in confidences(), cfg in config()) {
        // The upper bound is the mean of the *groups*: the token mean weights tokens differently
        // (e.g. [0, 10, 0] with window 2 has groups [5, 5] and token mean 3.3).
        let s = summarize(&c, &cfg).unwrap().unwrap();
        let groups = group_confidences(&c, cfg.window).unwrap();
        let group_mean = groups.iter().sum::<f64>() / groups.len() as f64;
        prop_assert!(s.lowest_group <= s.bottom_group + 1e-12);
        prop_assert!(s.bottom_group <= group_mean + 1e-9);
    }

    #[test]
    fn tail_of_constant_trace_is_the_constant(v in 0.0f64..30.0, n in 1usize..200, tail in 1usize..300) {
        let c = vec![v; n];
        let t = tail_confidence(&c, tail).unwrap().unwrap();
        prop_assert!((t - v).abs() <= 1e-9 * v.max(1.0));
    }

    #[test]
    fn confidence_is_never_negative_for_valid_logprobs(lp in prop::collection::vec(-50.0f32..=0.0, 0..30), k in 1usize..30) {
        prop_assert!(validate_top_logprobs(&lp).is_ok());
        prop_assert!(token_confidence(&lp, k) >= 0.0);
        prop_assert!(token_entropy(&lp, k) >= 0.0);
    }
}
