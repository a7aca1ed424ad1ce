"""Export stage: merged HF model folder -> 4-bit GPTQ/AWQ folder that vLLM serves (``orpo-export``)."""
