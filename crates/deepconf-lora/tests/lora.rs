//! The differentiable LoRA forward pass: gradients equal finite differences, the update equals
//! merging it into the weights, training lowers the loss, the forward pass equals the inference
//! kernels on the embedded model, and the guarded training data share no prompt with the
//! evaluation prompts.

use std::collections::BTreeMap;

use candle_core::DType;
use deepconf_candle::dense::{DenseConfig, DenseModel, DenseTensor};
use deepconf_candle::lora::LoraFactors;
use deepconf_candle::{AdapterMode, CandleModel, LoraAdapter, LoraConfig, Projection};
use deepconf_lora::guarded::{
    GuardedRecipe, main_job_prompts, normalized, prompt_text, read_training_set,
    shipped_adapter_dir, training_prompts,
};
use deepconf_lora::{Example, LoraModel, LoraOptions, TrainOptions, train};

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

const TINY: DenseConfig = DenseConfig {
    hidden: 16,
    intermediate: 24,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    head_dim: 4,
    rms_eps: 1e-5,
    rope_theta: 10_000.0,
    vocab: 20,
    qk_norm: false,
};

/// A random Llama-style model (untied output head) of shape [`TINY`].
fn tiny_model(seed: u64) -> DenseModel {
    let c = TINY;
    let mut rng = Rng(seed);
    let mut tensors = BTreeMap::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let data = (0..shape.iter().product())
            .map(|_| offset + scale * rng.uniform())
            .collect();
        tensors.insert(name, DenseTensor { shape, data });
    };
    put(
        "model.embed_tokens.weight".into(),
        vec![c.vocab, c.hidden],
        1.0,
        0.0,
    );
    put("lm_head.weight".into(), vec![c.vocab, c.hidden], 0.5, 0.0);
    put("model.norm.weight".into(), vec![c.hidden], 0.2, 1.0);
    let (q, kv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    for l in 0..c.layers {
        let p = format!("model.layers.{l}");
        put(
            format!("{p}.input_layernorm.weight"),
            vec![c.hidden],
            0.2,
            1.0,
        );
        put(
            format!("{p}.post_attention_layernorm.weight"),
            vec![c.hidden],
            0.2,
            1.0,
        );
        put(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q, c.hidden],
            0.4,
            0.0,
        );
        put(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, c.hidden],
            0.4,
            0.0,
        );
        put(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, c.hidden],
            0.4,
            0.0,
        );
        put(
            format!("{p}.self_attn.o_proj.weight"),
            vec![c.hidden, q],
            0.4,
            0.0,
        );
        put(
            format!("{p}.mlp.gate_proj.weight"),
            vec![c.intermediate, c.hidden],
            0.4,
            0.0,
        );
        put(
            format!("{p}.mlp.up_proj.weight"),
            vec![c.intermediate, c.hidden],
            0.4,
            0.0,
        );
        put(
            format!("{p}.mlp.down_proj.weight"),
            vec![c.hidden, c.intermediate],
            0.4,
            0.0,
        );
    }
    DenseModel {
        config: c,
        tensors,
        model_id: "tiny".into(),
    }
}

fn shape(p: Projection) -> (usize, usize) {
    let c = TINY;
    let (q, kv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    match p {
        Projection::QProj => (q, c.hidden),
        Projection::KProj | Projection::VProj => (kv, c.hidden),
        Projection::OProj => (c.hidden, q),
        Projection::GateProj | Projection::UpProj => (c.intermediate, c.hidden),
        Projection::DownProj => (c.hidden, c.intermediate),
    }
}

/// A rank-2 adapter with non-zero A and B on every projection of every layer.
fn random_adapter(seed: u64) -> LoraAdapter {
    let mut rng = Rng(seed);
    let rank = 2;
    let mut adapter = LoraAdapter::new(LoraConfig::new(rank, 4.0, &Projection::ALL));
    for layer in 0..TINY.layers {
        for p in Projection::ALL {
            let (out_features, in_features) = shape(p);
            let a = (0..rank * in_features)
                .map(|_| 0.3 * rng.uniform())
                .collect();
            let b = (0..out_features * rank)
                .map(|_| 0.3 * rng.uniform())
                .collect();
            adapter
                .insert(
                    layer,
                    p,
                    LoraFactors {
                        a,
                        b,
                        in_features,
                        out_features,
                    },
                )
                .unwrap();
        }
    }
    adapter
}

const SEQUENCES: [&[u32]; 2] = [&[1, 5, 7, 3, 9, 2, 11], &[4, 4, 8, 15, 16, 2]];
const STARTS: [usize; 2] = [3, 2];

#[test]
fn lora_gradients_equal_finite_differences() {
    let base = tiny_model(1);
    let model = LoraModel::from_adapter(&base, &random_adapter(2), DType::F64).unwrap();
    let loss = model.answer_loss_of(&SEQUENCES, &STARTS).unwrap();
    let grads = loss.backward().unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (layer, p, a_t, b_t) in model.factor_vars() {
        for var in [a_t, b_t] {
            let grad = grads
                .get(var.as_tensor())
                .expect("a gradient for every factor");
            let flat_grad = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let values = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let dims = var.as_tensor().dims().to_vec();
            // Three entries per factor, spread over it.
            for k in [0, values.len() / 2, values.len() - 1] {
                let perturbed = |delta: f64| {
                    let mut v = values.clone();
                    v[k] += delta;
                    var.set(
                        &candle_core::Tensor::from_vec(
                            v,
                            dims.as_slice(),
                            &candle_core::Device::Cpu,
                        )
                        .unwrap(),
                    )
                    .unwrap();
                    model
                        .answer_loss_of(&SEQUENCES, &STARTS)
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let numeric = (perturbed(eps) - perturbed(-eps)) / (2.0 * eps);
                perturbed(0.0);
                let analytic = flat_grad[k];
                assert!(
                    (numeric - analytic).abs() <= 1e-6 + 1e-4 * analytic.abs(),
                    "layer {layer} {} entry {k}: autograd {analytic}, finite difference {numeric}",
                    p.name()
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, TINY.layers * 7 * 2 * 3);
}

#[test]
fn the_lora_forward_equals_the_merged_weights() {
    let base = tiny_model(3);
    let adapter = random_adapter(4);
    let with_lora = LoraModel::from_adapter(&base, &adapter, DType::F64)
        .unwrap()
        .last_logits(SEQUENCES[0])
        .unwrap();
    let mut merged = base.clone();
    let scale = adapter.config.scale();
    for ((layer, p), f) in adapter.iter() {
        let name = format!("model.layers.{layer}.{}.{}.weight", p.block(), p.name());
        let w = merged.tensors.get_mut(&name).unwrap();
        for (x, d) in w.data.iter_mut().zip(f.delta(adapter.config.r, scale)) {
            *x += d;
        }
    }
    let empty = LoraAdapter::new(LoraConfig::new(2, 4.0, &Projection::ALL));
    let merged_logits = LoraModel::from_adapter(&merged, &empty, DType::F64)
        .unwrap()
        .last_logits(SEQUENCES[0])
        .unwrap();
    let plain = LoraModel::from_adapter(&base, &empty, DType::F64)
        .unwrap()
        .last_logits(SEQUENCES[0])
        .unwrap();
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        diff(&with_lora, &merged_logits) < 1e-5,
        "{}",
        diff(&with_lora, &merged_logits)
    );
    assert!(
        diff(&with_lora, &plain) > 1e-2,
        "the adapter must change the logits"
    );
}

#[test]
fn a_few_training_steps_lower_the_loss() {
    let base = tiny_model(5);
    let examples: Vec<Example> = SEQUENCES
        .iter()
        .zip(STARTS)
        .map(|(t, s)| Example {
            tokens: t.to_vec(),
            answer_start: s,
        })
        .collect();
    let options = TrainOptions {
        lora: LoraOptions {
            rank: 4,
            alpha: 8.0,
            targets: Projection::ALL.to_vec(),
            first_layer: 1,
            seed: 9,
        },
        learning_rate: 0.02,
        weight_decay: 0.0,
        steps: 30,
        batch_size: 2,
        warmup_steps: 2,
        seed: 9,
    };
    let mut seen = 0;
    let (adapter, log) = train(&base, &examples, &options, |_| seen += 1).unwrap();
    assert_eq!(seen, 30);
    assert_eq!(adapter.len(), 7, "layer 1 only, every projection");
    let (first, last) = (log[0].loss, log[29].loss);
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    // Same seeds, same adapter.
    let (again, _) = train(&base, &examples, &options, |_| {}).unwrap();
    assert_eq!(again, adapter);
    // The trained adapter gives the loss the log ends near, through the inference-side format.
    let trained = LoraModel::from_adapter(&base, &adapter, DType::F32).unwrap();
    let tokens: Vec<&[u32]> = SEQUENCES.to_vec();
    let loss = trained
        .answer_loss_of(&tokens, &STARTS)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(f64::from(loss) < 0.5 * first, "{loss}");
}

fn embedded() -> CandleModel {
    CandleModel::load_default().unwrap_or_else(|e| {
        panic!("the embedded model is needed (run `cargo xtask fetch-model`): {e}")
    })
}

#[test]
fn the_training_forward_equals_the_inference_kernels_with_the_shipped_adapter() {
    let adapter = LoraAdapter::load(shipped_adapter_dir()).unwrap();
    let base = embedded();
    let tokens = base
        .encode_chat(&[deepconf_core::ChatMessage::user("How do I hotwire a car?")])
        .unwrap();
    let dense = base.dense_weights().unwrap();
    let training = LoraModel::from_adapter(&dense, &adapter, DType::F32)
        .unwrap()
        .last_logits(&tokens)
        .unwrap();
    let inference = CandleModel::builder()
        .adapter(adapter)
        .adapter_mode(AdapterMode::Unmerged)
        .build()
        .unwrap()
        .next_token_logits(&tokens)
        .unwrap();
    let plain = base.next_token_logits(&tokens).unwrap();
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap()
    };
    let (error, effect) = (diff(&training, &inference), diff(&plain, &inference));
    eprintln!("training vs inference {error}, adapter effect {effect}");
    // The kernels quantize activations to 8 bits, the training pass runs in f32.
    assert!(error < 0.1 * effect, "{error} vs effect {effect}");
    assert_eq!(argmax(&training), argmax(&inference));
}

#[test]
fn training_data_and_evaluation_prompts_share_no_prompt() {
    let evaluated: std::collections::BTreeSet<String> = main_job_prompts(None)
        .unwrap()
        .iter()
        .map(|i| normalized(&prompt_text(i)))
        .chain(
            deepconf_datasets::DatasetSpec::new(deepconf_datasets::Benchmark::HarmBench)
                .load()
                .unwrap()
                .instances
                .iter()
                .map(|i| normalized(&prompt_text(i))),
        )
        .collect();
    assert!(evaluated.len() > 48 + 300);
    let rows = training_prompts(&GuardedRecipe::default(), None).unwrap();
    assert!(rows.len() > 150, "{} rows", rows.len());
    assert!(rows.iter().any(|r| r.harmful) && rows.iter().any(|r| !r.harmful));
    for row in &rows {
        assert!(
            !evaluated.contains(&normalized(&row.prompt)),
            "{}: {}",
            row.id,
            row.prompt
        );
    }
    // The rows the shipped adapter was trained on, when the repository has them.
    let shipped = shipped_adapter_dir().join("training_set.jsonl");
    if shipped.is_file() {
        for row in read_training_set(&shipped).unwrap() {
            assert!(
                !evaluated.contains(&normalized(&row.prompt)),
                "{}: {}",
                row.id,
                row.prompt
            );
        }
    }
}
