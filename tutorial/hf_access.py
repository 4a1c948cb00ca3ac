"""Before the 70B's 141 GB download: is there a Hugging Face token, and may it read the gated weights?

Asks the Hub about serve_config.yaml's model_source with the token that `hf` and vLLM will use
(HF_TOKEN, or the file `hf auth login` wrote); prints one line and exits 1 when the download would
fail. The token is never printed.
"""

import sys
from pathlib import Path

import yaml
from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

ROOT = Path(__file__).resolve().parent.parent


def model_source() -> str:
    (app,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    return app["args"]["llm_configs"][0]["model_loading_config"]["model_source"]


def problem(repo: str) -> str | None:
    """Why the token cannot download `repo`, or None when it can."""
    if not get_token():
        return ("no Hugging Face token: type it with `read -rsp 'Hugging Face token: ' HF_TOKEN && export HF_TOKEN` "
                "(nothing reaches a command line or the shell history), or run `hf auth login`")
    try:
        HfApi().auth_check(repo)
    except GatedRepoError:
        return f"the token may not read {repo} yet: accept Meta's licence at https://huggingface.co/{repo}, then retry"
    except RepositoryNotFoundError:
        return f"the Hub refused the token for {repo} (401): it is wrong or expired; make a new read token"
    except HfHubHTTPError as e:
        return f"the Hub answered {e.response.status_code if e.response is not None else 'nothing'} for {repo}"
    return None


if __name__ == "__main__":
    repo = sys.argv[1] if len(sys.argv) > 1 else model_source()
    why = problem(repo)
    print(f"Hugging Face: {why}" if why else f"Hugging Face: the token may read {repo}")
    sys.exit(1 if why else 0)
