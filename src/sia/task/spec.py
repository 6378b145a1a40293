"""The contents of `task.toml`, typed and checked: what a task folder declares about itself."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: str = Field("inputs.jsonl", description="JSONL of {id, ...visible fields}.")
    labels: str = Field("labels.jsonl", description="JSONL of {id, ...hidden target fields}.")
    prepare: str | None = Field(None, description="'file.py:function' that builds the data files; run by `sia setup`.")
    source: str = ""
    license: str = ""


class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    train: float = Field(0.5, gt=0, description="Fraction (<1) or count (>=1) of examples.")
    val: float = Field(0.25, gt=0)
    test: float = Field(0.25, gt=0)
    field: str | None = Field(None, description="A visible field naming each example's split (train, val or test), "
                                                "instead of a seeded shuffle: for data whose splits must not share a source.")


class GraderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry: str = Field(description="'module:function' or 'file.py:function' in the task folder.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments passed to the grader (tolerances, repetitions).")


class HarnessSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: str | None = Field(None, description="Harness file in the task folder; the template harness when absent.")
    timeout_s: float = Field(60.0, gt=0, description="Wall-clock limit of one rollout, queueing at the policy included.")
    helper: list[str] = Field(default_factory=list, description="Public Python files of the task folder given to harnesses "
                              "(ctx.task['files']); the first is the helper module: baseline(example), check(example, output, seed), "
                              "describe(example), neighbours(example, output), each optional.")


class TaskSpec(BaseModel):
    """The contents of `task.toml`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    instruction: str = Field("", description="What the agent is asked to do, shown to the harness.")
    metric: str = "accuracy"
    score: Literal["binary", "continuous"] = "binary"
    output: Literal["text", "program", "json"] = "text"
    labels: list[str] = Field(default_factory=list, description="Allowed answers, if the task has a closed set.")
    labels_file: str | None = Field(None, description="JSON list of allowed answers in the data folder, instead of `labels`.")
    multi_label: bool = False
    input_field: str = Field("text", description="The visible field holding the main input.")
    input_template: str | None = Field(None, description="How the template harness shows an example to the model, e.g. "
                                                         "'Review: {text}'; default: every visible field.")
    data: DataSpec = Field(default_factory=DataSpec)
    splits: SplitSpec = Field(default_factory=SplitSpec)
    grader: GraderSpec
    harness: HarnessSpec = Field(default_factory=HarnessSpec)

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.score == "binary" and self.multi_label:
            raise ValueError("a multi_label task scores F1, so set score = \"continuous\"")
        return self
