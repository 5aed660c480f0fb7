//! Training a LoRA adapter with candle-nn's `AdamW`: seeded batches, linear warmup then linear
//! decay of the learning rate, the loss of every step reported as it comes.

use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use deepconf_candle::LoraAdapter;
use deepconf_candle::dense::DenseModel;
use serde::{Deserialize, Serialize};

use crate::forward::{LoraModel, LoraOptions, SplitMix64};
use crate::{Error, Result};

/// One training sequence: the tokens of prompt and answer, and where the answer starts (the
/// loss covers the answer only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Prompt then answer tokens.
    pub tokens: Vec<u32>,
    /// Index of the first answer token.
    pub answer_start: usize,
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The adapter's shape and initialisation seed.
    pub lora: LoraOptions,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Steps of linear warmup from `learning_rate / warmup_steps`.
    pub warmup_steps: usize,
    /// Seed of the batch order.
    pub seed: u64,
}

impl TrainOptions {
    /// The learning rate of `step`: linear warmup to the peak over `warmup_steps`, then linear
    /// decay to a tenth of it at the last step.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = (step - self.warmup_steps) as f64 / span;
        self.learning_rate * (0.1 + 0.9 * (1.0 - progress))
    }

    fn check(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 {
            return Err(Error::invalid(
                "steps",
                "steps and batch_size must be at least 1",
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(Error::invalid(
                "learning_rate",
                format!("{} is not a positive number", self.learning_rate),
            ));
        }
        Ok(())
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Step index from 0.
    pub step: usize,
    /// Mean answer cross-entropy of the step's batch, before the update.
    pub loss: f64,
    /// Learning rate used.
    pub learning_rate: f64,
    /// Seconds since training started (after the frozen prefixes were computed).
    pub seconds: f64,
}

/// Batches of `batch_size` examples: every epoch a seeded permutation (Fisher-Yates).
fn batch_order(n: usize, batch_size: usize, steps: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = Vec::new();
    let mut batches = Vec::with_capacity(steps);
    let mut cursor = 0;
    for _ in 0..steps {
        let mut batch = Vec::with_capacity(batch_size);
        while batch.len() < batch_size.min(n) {
            if cursor == order.len() {
                order = (0..n).collect();
                for i in (1..n).rev() {
                    order.swap(i, rng.below(i + 1));
                }
                cursor = 0;
            }
            batch.push(order[cursor]);
            cursor += 1;
        }
        batches.push(batch);
    }
    batches
}

/// Trains a fresh adapter on `examples` over `base` in f32 and returns it with the log of every
/// step; `on_step` sees each step as it ends (a progress bar). Deterministic for the options'
/// seeds (the same machine and thread count give the same factors).
pub fn train(
    base: &DenseModel,
    examples: &[Example],
    options: &TrainOptions,
    mut on_step: impl FnMut(&StepLog),
) -> Result<(LoraAdapter, Vec<StepLog>)> {
    options.check()?;
    if examples.is_empty() {
        return Err(Error::invalid("examples", "no training examples"));
    }
    let model = LoraModel::new(base, &options.lora, DType::F32)?;
    let prefixes = examples
        .iter()
        .map(|e| model.frozen_prefix(&e.tokens))
        .collect::<Result<Vec<Tensor>>>()?;
    let params = ParamsAdamW {
        lr: options.learning_rate_at(0),
        weight_decay: options.weight_decay,
        ..ParamsAdamW::default()
    };
    let mut optimizer = AdamW::new(model.varmap().all_vars(), params)?;
    let started = Instant::now();
    let mut log = Vec::with_capacity(options.steps);
    for (step, batch) in batch_order(
        examples.len(),
        options.batch_size,
        options.steps,
        options.seed,
    )
    .into_iter()
    .enumerate()
    {
        let learning_rate = options.learning_rate_at(step);
        optimizer.set_learning_rate(learning_rate);
        let refs: Vec<&Tensor> = batch.iter().map(|&i| &prefixes[i]).collect();
        let tokens: Vec<&[u32]> = batch
            .iter()
            .map(|&i| examples[i].tokens.as_slice())
            .collect();
        let starts: Vec<usize> = batch.iter().map(|&i| examples[i].answer_start).collect();
        let loss = model.answer_loss(&refs, &tokens, &starts)?;
        let value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(Error::invalid(
                "learning_rate",
                format!("the loss diverged at step {step} ({value}); lower the learning rate"),
            ));
        }
        optimizer.backward_step(&loss)?;
        let entry = StepLog {
            step,
            loss: value,
            learning_rate,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_step(&entry);
        log.push(entry);
    }
    Ok((model.to_adapter()?, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        let options = TrainOptions {
            lora: LoraOptions {
                rank: 8,
                alpha: 16.0,
                targets: vec![],
                first_layer: 0,
                seed: 0,
            },
            learning_rate: 0.003,
            weight_decay: 0.0,
            steps: 60,
            batch_size: 4,
            warmup_steps: 4,
            seed: 0,
        };
        assert!((options.learning_rate_at(0) - 0.00075).abs() < 1e-12);
        assert!((options.learning_rate_at(3) - 0.003).abs() < 1e-12);
        assert!((options.learning_rate_at(4) - 0.003).abs() < 1e-12);
        // The salvaged run's last step logged 0.0003482142857142858.
        assert!((options.learning_rate_at(59) - 0.000_348_214_285_714_285_8).abs() < 1e-12);
    }

    #[test]
    fn batches_cover_every_example_once_per_epoch() {
        let batches = batch_order(10, 4, 5, 7);
        let first: Vec<usize> = batches.iter().flatten().take(10).copied().collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(batch_order(10, 4, 5, 7), batches);
        assert_ne!(batch_order(10, 4, 5, 8), batches);
    }
}
