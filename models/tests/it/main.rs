//! Integration tests of `gleaner-models`: the real all-MiniLM-L6-v2 checkpoint against an
//! independent float64 numpy implementation (`models/reference/minilm_reference.py`), on the CPU
//! backends and on wgpu (Mesa lavapipe on machines without a GPU).

mod gguf;
mod gpt;
mod minilm;
mod smollm;
mod tiny;
