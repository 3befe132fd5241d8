"""Options several subcommands share, spelled and read the same way in each.

Every command that runs a model takes ``--device`` (``auto``, ``cpu``,
``cuda``, ``cuda:N``) and every command that reads a trained model takes it
as ``--checkpoint``. Light to import: ``fairseq-ser --help`` loads no torch.
"""

from typing import Optional

AUTO = "auto"


def add_device_argument(parser, what: str, note: str = "") -> None:
    """``--device`` for a torch model: auto (CUDA when available, else the CPU), cpu, cuda, cuda:N."""
    parser.add_argument("--device", default=AUTO, metavar="DEV",
                        help=f"where {what}: auto (CUDA when available, else the CPU), cpu, cuda or "
                        f"cuda:N{note} (default: %(default)s)")


def torch_device(device: str) -> Optional[str]:
    """The device for the library's ``device=`` arguments, where None means auto."""
    return None if device == AUTO else device


def say(message: str) -> None:
    """A command's progress line on standard output, shown as it happens (the library's ``report``)."""
    print(message, flush=True)
