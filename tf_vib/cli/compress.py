"""``tf-vib compress``: a saved model and its data in, the compressed model and its report out.

Loads MODEL (a ``.keras`` file of either Keras, an ``.h5`` file or a SavedModel) in Keras's
safe mode, runs ``tf_vib.compress`` on the arrays of ``--data`` (and ``--validation``,
``--test``), and writes into ``-o DIR``: the compressed model in MODEL's format
(``compressed.keras``, ``compressed.h5`` or the SavedModel ``compressed/``), ``report.json``,
``report.txt`` (the table), ``accuracy_vs_size.png`` and, with ``--tflite``, one verified
``compressed_<mode>.tflite`` per mode.
"""

import argparse
import inspect
import json
import pathlib
import time

__all__ = ["add_command", "run", "OPTIONS"]

#: compress() keyword arguments given as flags: ``(name, type, help)``, a tuple type being
#: the choices; a flag left out keeps compress()'s default, shown in the help.
OPTIONS = (
    ("epochs", int, "VIB training epochs"),
    ("finetune_epochs", int, "fine-tuning epochs"),
    ("batch_size", int, "batch size"),
    ("learning_rate", float, "Adam learning rate of the weights"),
    ("max_accuracy_drop", float, "accepted validation-accuracy loss, a fraction (0.005: half a point)"),
    ("metric", str, "what choices are made on: accuracy, loss or a Keras metric name (mae, auc...)"),
    ("max_metric_drop", float, "accepted loss of the metric, in its units"),
    ("on_miss", ("original", "best"), "what comes back when no model meets the bound"),
    ("unit_multiple", int, "trim LSTM units to a multiple of this when accuracy allows (1: off)"),
    ("validation_fraction", float, "share of --data held out when --validation is not given"),
    ("seed", int, "random seed"),
    ("verbose", (0, 1, 2), "0 silent, 1 stage lines and progress bars, 2 one line per epoch"),
)


def _line(text):
    print(f"[tf-vib compress] {text}", flush=True)


def add_command(commands):
    from converters.tflite import QUANTIZATIONS
    from tf_vib import compress

    defaults = {name: p.default for name, p in inspect.signature(compress).parameters.items()}
    parser = commands.add_parser(
        "compress", help="compress a saved LSTM/GRU model on its data (.npz arrays)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each .npz holds arrays 'x' and 'y'; for a model with several inputs or outputs, one "
        "'x_<input name>' per input and one 'y_<output name>' per output.",
    )
    parser.add_argument("model", help="the trained model: a .keras file (Keras 3 or tf_keras), .h5 or a SavedModel")
    parser.add_argument("--data", required=True, help="the training arrays (.npz with x and y)")
    parser.add_argument("--validation", help="validation arrays (.npz); every choice is made on them "
                        "(default: --validation-fraction of --data)")
    parser.add_argument("--test", help="test arrays (.npz), only reported")
    parser.add_argument("-o", "--output", required=True, help="the folder to write into")
    parser.add_argument("--tflite", type=_modes(QUANTIZATIONS), default=(),
                        help=f"comma-separated TFLite modes to convert and verify the result in "
                        f"({', '.join(QUANTIZATIONS)}), e.g. float32,int8")
    parser.add_argument("--distill", action=argparse.BooleanOptionalAction, default=defaults["distill"],
                        help="fine-tune against the original model (classifiers)")
    parser.add_argument("--unsafe", action="store_true",
                        help="load a model whose Lambda layers run code (only for a file you trust)")
    for name, kind, text in OPTIONS:
        choices = kind if isinstance(kind, tuple) else None
        default = defaults[name]
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(choices[0]) if choices else kind,
                            choices=choices, default=None,
                            help=f"{text} (default: {'chosen by compress()' if default is None else default})")
    parser.set_defaults(run=run)
    return parser


def _modes(known):
    def parse(text):
        modes = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
        unknown = [m for m in modes if m not in known]
        if unknown or not modes:
            raise argparse.ArgumentTypeError(f"takes modes among {', '.join(known)}, comma-separated; "
                                             f"received {text!r}")
        return modes
    return parse


def run(args):
    import tf_vib
    from tf_vib.cli.files import UsageError, load_model, model_format, read_arrays

    started = time.perf_counter()
    kind = model_format(args.model)
    data = {flag: read_arrays(path, flag, labels=True) for flag, path in
            (("--data", args.data), ("--validation", args.validation), ("--test", args.test)) if path}
    out = pathlib.Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {str(out)!r} is a file; give a folder to write into")
    _line(f"loading {args.model}{' (unsafe: its code may run)' if args.unsafe else ''}")
    model = load_model(args.model, unsafe=args.unsafe)
    _line(f"{model.name}: {model.count_params():,} parameters; {_samples(data)}")
    options = {name: getattr(args, name) for name, _, _ in OPTIONS if getattr(args, name) is not None}
    try:
        result = tf_vib.compress(model, data["--data"], validation_data=data.get("--validation"),
                                 test_data=data.get("--test"), distill=args.distill, **options)
    except (ValueError, TypeError) as error:  # compress() checks every argument before training
        raise UsageError(str(error).replace("`train_data`", "--data").replace("`validation_data`", "--validation")
                         .replace("`test_data`", "--test")) from error
    out.mkdir(parents=True, exist_ok=True)
    saved = _save(result.model, out, kind)
    _line(f"wrote the compressed model ({result.model.count_params():,} parameters) to {saved}")
    report = {"model": str(args.model), "compressed": str(saved), "threshold": result.threshold,
              "compression": result.report.to_dict()}
    text = str(result.report)
    verified = True
    if args.tflite:
        table, report["tflite"], verified = _tflite(result.model, data, args.tflite, out)
        text += "\n\n" + table
    (out / "report.txt").write_text(text + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    result.report.plot(out / "accuracy_vs_size.png", title=f"tf-vib compress: {pathlib.Path(args.model).name}")
    _line(f"done in {time.perf_counter() - started:.0f} s; wrote report.json, report.txt, accuracy_vs_size.png "
          f"{'and the TFLite files ' if args.tflite else ''}to {out}/")
    return 0 if verified else 1


def _samples(data):
    from tf_vib.compress._data import num_samples

    return ", ".join(f"{num_samples(x)} samples in {flag}" for flag, (x, _) in data.items())


def _save(model, out, kind):
    from tf_vib import bridge

    path = out / f"compressed{kind}"
    bridge.save_model(model, str(path))
    return path


def _tflite(model, data, modes, out):
    """Convert and verify ``model`` in ``modes``: ``(table, figures as dicts, all verified)``.

    The files are verified on the test arrays, else the validation ones, else the training
    ones; int8 is calibrated on up to 300 training samples.
    """
    import dataclasses

    from tf_vib.cli.deploy import convert_and_measure, files_table
    from tf_vib.cli.files import labels_in_output_order
    from tf_vib.compress._data import take

    x_train = data["--data"][0]
    flag = next(f for f in ("--test", "--validation", "--data") if f in data)
    x_check, y_check = data[flag]
    _line(f"TFLite: converting the compressed model ({', '.join(modes)}) and verifying it on {flag}")
    figures, files = convert_and_measure({"compressed": model}, modes, take(x_train, slice(0, 300)),
                                         x_check, labels_in_output_order(y_check, model), log=_line)
    for (name, mode), flat in files.items():
        (out / f"{name}_{mode}.tflite").write_bytes(flat)
    table = files_table(figures)
    print(table, flush=True)
    for f in figures:
        if not f.verified:
            _line(f"the {f.mode} file misses its verification target: {f.verification}")
    return table, [dataclasses.asdict(f) for f in figures], all(f.verified for f in figures)
