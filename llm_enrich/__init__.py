"""ReaSeq: LLM item knowledge enrichment and diffusion-LM beyond-log generation."""
