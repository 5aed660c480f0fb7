//! Qwen3 from a checkpoint directory the test writes itself (random weights, tiny tokenizer),
//! loaded through the same public loader as a downloaded model.

use deepconf_candle::{CandleModel, ModelSource, WeightFormat};
use deepconf_core::{GenerationRequest, LogprobModel, NoObserver, SamplingParams, TraceSpec};

use crate::common;

#[test]
fn tiny_qwen3_checkpoint_loads_and_generates() {
    let dir = common::scratch_dir("qwen3");
    common::write_tiny_qwen3(&dir, 7);
    let mut model = CandleModel::builder()
        .source(ModelSource::SafetensorsDir { path: dir.clone() })
        .build()
        .unwrap();
    assert_eq!(model.vocab_size(), common::TINY_VOCAB);
    assert_eq!(model.context_length(), 256);

    let prompt = model
        .encode_chat(&[deepconf_core::ChatMessage::user("hello")])
        .unwrap();
    assert_eq!(prompt[0], common::TINY_IM_START);
    // Thinking is off by default: the template closes an empty think block in the prompt.
    let think_end = model.tokenizer().token_id("</think>").unwrap();
    assert!(prompt.contains(&think_end));

    let sampling = SamplingParams::default()
        .with_max_tokens(12)
        .with_seed(3)
        .with_top_logprobs(20);
    let request = GenerationRequest::user("hello", sampling);
    let specs = [
        TraceSpec::derive(3, 0),
        TraceSpec::derive(3, 1),
        TraceSpec::derive(3, 2),
    ];
    let batched = model
        .generate_batch(&request, &specs, &mut NoObserver)
        .unwrap();
    for (spec, trace) in specs.iter().zip(&batched) {
        assert!(!trace.steps.is_empty());
        for s in &trace.steps {
            assert_eq!(s.top_logprobs.len(), 20);
            assert!(s.top_logprobs.windows(2).all(|w| w[0] >= w[1]));
        }
        let single = model.generate(&request, *spec, &mut NoObserver).unwrap();
        assert_eq!(single.token_ids(), trace.token_ids());
    }

    // The f32 and Q8_0 weight formats run the same checkpoint to nearly the same distribution.
    let mut q8 = CandleModel::builder()
        .source(ModelSource::SafetensorsDir { path: dir.clone() })
        .weight_format(WeightFormat::Q8_0)
        .build()
        .unwrap();
    let greedy = GenerationRequest::user("hello", SamplingParams::greedy().with_max_tokens(1));
    let a = model.generate(&greedy, specs[0], &mut NoObserver).unwrap();
    let b = q8.generate(&greedy, specs[0], &mut NoObserver).unwrap();
    assert!((a.steps[0].top_logprobs[0] - b.steps[0].top_logprobs[0]).abs() < 0.05);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_weights_name_the_directory() {
    let dir = common::scratch_dir("qwen3-empty");
    std::fs::create_dir_all(&dir).unwrap();
    let err = CandleModel::builder()
        .source(ModelSource::SafetensorsDir { path: dir.clone() })
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
