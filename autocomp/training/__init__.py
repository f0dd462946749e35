"""Training: the base model's training and its cache, fine-tuning by knowledge distillation
(``loop``) and the layer-wise distillation of replacement layers (``distill``)."""
