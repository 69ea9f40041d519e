"""Whether a route gives its Dify app every input the app's form requires.

One rule for the two places that check it: the start-up check
(:func:`app.dify.appcheck.check_routes`) and ``dify-bridge doctor``. Both read the form from
Dify's ``GET /parameters``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.config.settings import AppMode, Route


@dataclass(frozen=True)
class InputsVerdict:
    """The outcome: ``ok``, what was found and, when not ok, what to change."""

    ok: bool
    detail: str
    fix: str = ""


def _variables(params: dict[str, Any]) -> dict[str, bool]:
    """The form's input variables and whether each is required."""
    variables: dict[str, bool] = {}
    form = params.get("user_input_form") or []
    for item in form if isinstance(form, list) else []:
        if isinstance(item, dict):
            for spec in item.values():
                if isinstance(spec, dict) and isinstance(spec.get("variable"), str):
                    variables[spec["variable"]] = bool(spec.get("required"))
    return variables


def check_form_inputs(route: Route, params: dict[str, Any], *, key: str) -> InputsVerdict:
    """Every required input mapped (workflows also need the message text's variable).

    ``key`` is how the fix names the route's settings: ``routes.3.`` in the doctor's report of
    the routing file, ``the route's `` in the start-up log."""
    variables = _variables(params)
    mapped = set(route.config.inputs)
    query_var = route.config.dify.query_variable
    mode = route.config.dify.mode
    is_workflow = mode in (AppMode.WORKFLOW, AppMode.COMPLETION)
    if mode is AppMode.WORKFLOW and query_var not in variables:
        return InputsVerdict(
            False,
            f"the workflow has no input {query_var!r} for the "
            f"message text (inputs: {', '.join(variables) or 'none'})",
            f"set {key}dify.query_variable to one of them",
        )
    provided = mapped | ({query_var} if is_workflow else set())
    missing = [v for v, req in variables.items() if req and v not in provided]
    if missing:
        return InputsVerdict(
            False,
            f"required input(s) {', '.join(missing)} are not mapped: Dify rejects every question",
            f"map them in {key}inputs "
            f"(e.g. {missing[0]}: speaker_name) or make them optional in Dify",
        )
    unknown = sorted(mapped - set(variables))
    note = f"; Dify ignores unknown input(s) {', '.join(unknown)}" if unknown else ""
    return InputsVerdict(True, f"{len(variables)} form input(s), every required one mapped{note}")


__all__ = ["InputsVerdict", "check_form_inputs"]
