"""``tf-vib convert``: a saved Keras model -> a verified ``.tflite`` file (and a C header)."""

import pathlib

__all__ = ["add_convert_command", "run_convert"]


def add_convert_command(commands):
    from converters.describe import RUNTIME_TARGETS
    from converters.plan import FEATURE_SELECTIONS
    from converters.tflite import MODES

    parser = commands.add_parser(
        "convert",
        help="convert a .keras model (plain or with VIB layers) to a verified .tflite file",
        description="Strip VIB masks, convert to TFLite in a child process, and compare the "
        "file with the Keras model. Prints the size, the ops and the verification figures.",
    )
    parser.add_argument("model", help="a .keras file (tf_keras or Keras 3), .h5 or a SavedModel")
    parser.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    parser.add_argument("--quantization", choices=MODES, default="dynamic",
                        help="float32, dynamic (default), float16, int8, or auto (int8 or float32 per "
                        "layer, whichever the cost table says is faster on the device; needs --calibration)")
    parser.add_argument("--cost-table", help="with --quantization auto: a JSON cost table "
                        "(benchmarks/cost_table.py makes one; default: the shipped emulated Cortex-A72 table)")
    parser.add_argument("--streaming", action="store_true",
                        help="one frame per invoke, the recurrent states as extra inputs and outputs "
                        "(for a camera loop; verified over whole clips)")
    parser.add_argument("--calibration", help=".npz/.npy of representative inputs (needed for int8); "
                        "'x' (and 'y') arrays in a .npz, or one 'x_<input name>' per input")
    parser.add_argument("--verify", help=".npz/.npy of inputs (and 'y' labels) to verify on "
                        "(default: the calibration data)")
    parser.add_argument("--no-fallback", action="store_true",
                        help="with --quantization auto: keep the cost table's file even when it misses "
                        "verification (default: retry with the LSTMs float32, then all float32, judged on "
                        "the --verify data, else the calibration data, when it holds >= 200 samples)")
    parser.add_argument("--int8-io", action="store_true", help="int8 input and output tensors (int8 only)")
    parser.add_argument("--batch-size", type=int, default=1, help="the file's batch size (default 1)")
    parser.add_argument("--runtime", choices=RUNTIME_TARGETS, default="ai-edge-litert",
                        help="the runtime the file must load in (default ai-edge-litert)")
    parser.add_argument("--feature-selection", choices=FEATURE_SELECTIONS, default="auto",
                        help="the kept input features of a stripped model: auto (default: zero kernel "
                        "rows when they add few weights, else a GATHER), gather, or zero_rows; zero rows "
                        "need finite values in the removed inputs (use gather if they may be NaN)")
    parser.add_argument("--unit-multiple", type=_unit_multiple, default="auto",
                        help="pad each fused LSTM with zero units to a multiple of this (same outputs, "
                        "faster float kernels): auto (default: 4 in the float modes, none in int8), "
                        "or an integer (1: no padding)")
    parser.add_argument("--c-header", help="also write the file as a C array to this .h path")
    parser.add_argument("--unsafe", action="store_true",
                        help="load a model whose Lambda layers run code (only for a file you trust)")
    parser.set_defaults(run=run_convert)
    return parser


def _unit_multiple(text):
    import argparse

    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1; received {text!r}")
    return value


def run_convert(args):
    import converters
    from tf_vib.cli.files import labels_in_output_order, load_model, read_arrays

    calibration = read_arrays(args.calibration, "--calibration", labels=False) if args.calibration else (None, None)
    check = read_arrays(args.verify, "--verify", labels=False) if args.verify else calibration
    model = load_model(args.model, unsafe=args.unsafe)
    labels = labels_in_output_order(check[1], model) if check[0] is not None else None
    auto = args.quantization == "auto"
    print(f"[tf-vib convert] {args.model}: {model.count_params():,} parameters -> "
          f"{args.quantization}{' with int8 I/O' if args.int8_io else ''}", flush=True)
    flat = converters.to_tflite(
        model, quantization=args.quantization, representative_data=calibration[0],
        batch_size=args.batch_size, int8_io=args.int8_io, runtime=args.runtime,
        feature_selection=args.feature_selection, unit_multiple=args.unit_multiple,
        cost_table=args.cost_table, streaming=args.streaming, fallback=not args.no_fallback,
        verify_data=(check[0], labels) if auto and not args.no_fallback and check[0] is not None else None,
    )
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(flat)
    print(f"wrote {output}")
    print(converters.describe_tflite(flat))
    if args.c_header:
        header = pathlib.Path(args.c_header)
        header.write_text(converters.to_c_array(flat, name=_identifier(output.stem)))
        print(f"wrote {header}")
    if check[0] is None:
        print("verification: skipped (pass --verify or --calibration data)")
        return 0
    verify = converters.verify_streaming if args.streaming else converters.verify
    result = verify(model, flat, check[0], labels)
    print(f"verification: {result}")
    return 0 if result.passed else 1


def _identifier(stem):
    name = "".join(c if c.isalnum() else "_" for c in stem)
    return f"{'m_' if name[:1].isdigit() else ''}{name}_tflite"
