"""Fine-tuning the text encoder on purchases: pair mining (Spark), the training run through
TorchDistributor, and the MLflow registry of tuned encoders. The training core is udfs/finetune.py."""
