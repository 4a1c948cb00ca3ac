"""Deploy service.yaml as an Anyscale service, with the Hugging Face token added to its env_vars.

`anyscale service deploy --env HF_TOKEN=...` would put the token on a command line, which every
account on the machine can read; the SDK takes it from this process instead. The token is the one
`hf` uses (HF_TOKEN, or the file `hf auth login` wrote) and is never printed.
"""

import sys
from pathlib import Path

from huggingface_hub import get_token

SERVICE_YAML = Path(__file__).resolve().parent.parent / "service.yaml"


def config_with_token(path: Path = SERVICE_YAML):
    """service.yaml's ServiceConfig with HF_TOKEN added to its env_vars."""
    from anyscale.service.models import ServiceConfig  # the reader installs anyscale for this step only

    token = get_token()
    if not token:
        sys.exit("no Hugging Face token: type it with `read -rsp 'Hugging Face token: ' HF_TOKEN && export HF_TOKEN`, "
                 "or run `hf auth login`")
    config = ServiceConfig.from_yaml(str(path))
    return config.options(env_vars={**(config.env_vars or {}), "HF_TOKEN": token})


if __name__ == "__main__":
    import anyscale

    config = config_with_token()
    anyscale.service.deploy(config)
    print(f"Deployed {config.name}: `anyscale service status -n {config.name}` shows its state.")
