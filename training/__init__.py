"""Training on top of uniworld_core: the FlashI2V / Uniworld-OSP2.0 objective and the training loop.

objective.py  flashi2v_loss (latent shifting, Fourier ratio ~ U[0.05, 0.95], logit-normal sigmas,
              resolution-dependent shift, velocity target, text drop)
lora_train.py trainable LoRA on the attention and FFN linears, exported in ComfyUI's key format
trainer.py    trainable sets, AdamW, warmup/cosine, clipping, EMA, exact checkpoints, exports
config.py     TrainConfig with errors that name the field
"""
