"""Fine-tuning: the Opinion QA dataset, LoRA / QLoRA trait adapters and their merge, generation and IKE."""
