"""Convert a HuggingFace transformers wav2vec2 folder into a fairseq wav2vec 2.0 checkpoint.

HF_DIR holds config.json and model.safetensors or pytorch_model.bin (as
save_pretrained writes them, or a downloaded hub snapshot) of a
Wav2Vec2ForPreTraining, Wav2Vec2Model or Wav2Vec2ForCTC (other Wav2Vec2For...
heads too). OUT.pt is a fairseq `wav2vec2` checkpoint in the current cfg
layout, accepted as model.w2v_path by every stage. Only a Wav2Vec2ForPreTraining
model carries the quantizer and projections that TAPT continues training;
task heads (lm_head, classifiers) are dropped. transformers is not needed.
"""


def add_arguments(parser):
    parser.add_argument("hf_dir", metavar="HF_DIR",
                        help="HuggingFace model folder (config.json, model.safetensors or pytorch_model.bin, "
                        "optional preprocessor_config.json)")
    parser.add_argument("out", metavar="OUT.pt", help="fairseq checkpoint to write")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.pt if it exists")
    parser.add_argument("--normalize", choices=("auto", "true", "false"), default="auto",
                        help="whether the model expects zero-mean unit-variance audio (stored as the "
                        "checkpoint's task.normalize); auto: do_normalize of preprocessor_config.json, "
                        "else true for layer-norm feature encoders (large LV-60, XLS-R) (default %(default)s)")


def run(args):
    from ..models.hf_import import convert_hf_folder, save_checkpoint

    normalize = {"auto": None, "true": True, "false": False}[args.normalize]
    result = convert_hf_folder(args.hf_dir, normalize=normalize)
    save_checkpoint(result, args.out, force=args.force)
    model = result.state["cfg"]["model"]
    architectures = ", ".join(result.architectures) or "no architectures listed"
    print(f"{args.out}: fairseq wav2vec2 from {args.hf_dir} ({architectures})")
    print(f"  {model['encoder_layers']} layers, dim {model['encoder_embed_dim']}, "
          f"feature encoder {'group' if model['extractor_mode'] == 'default' else 'layer'} norm, "
          f"{'pre' if model['layer_norm_first'] else 'post'}-LN Transformer, "
          f"task.normalize={str(result.normalize).lower()}")
    print(f"  weights: {', '.join(result.files)}")
    if result.dropped:
        print(f"  dropped (task head): {', '.join(result.dropped)}")
    if result.mask_emb_initialised:
        print("  the model had no mask embedding (masked_spec_embed): initialised as fairseq does")
    if result.has_pretraining_modules:
        print("  pretraining modules (quantizer, project_q, final_proj): included; usable for V-FT, TAPT, P-TAPT")
    else:
        print("  pretraining modules (quantizer, project_q, final_proj): absent; usable for V-FT and P-TAPT, "
              "not TAPT (convert a Wav2Vec2ForPreTraining checkpoint for TAPT)")
    return 0
