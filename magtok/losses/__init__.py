"""Training losses. They live outside the model: perceptual (VGG / LPIPS), discriminators and
adversarial objectives. The tokenizer's state_dict never contains any of them."""
