"""Dify's progress as steps (what Slack shows as task cards) and where a streamed answer is cut
when it outgrows one Slack message."""

from __future__ import annotations

from adapters.slack._native import PART_LIMIT, cut_point, defuse, sources_chunk, task_chunk
from app.dify.events import AgentThought, MessageEnd, NodeEvent, WorkflowFinished
from app.pipeline.answer_fold import Answer, fold
from app.pipeline.model import Source, Step


def _node(phase: str, node_type: str, title: str, status: str | None = None) -> NodeEvent:
    return NodeEvent(
        event=f"node_{phase}",
        phase=phase,
        node_id=title.lower(),
        node_type=node_type,
        title=title,
        status=status,
    )


def test_workflow_nodes_become_steps_that_finish_or_fail() -> None:
    ans = Answer()
    fold(_node("started", "knowledge-retrieval", "Docs"), ans)
    assert ans.status == "Searching the knowledge base…"
    fold(_node("finished", "knowledge-retrieval", "Docs", "succeeded"), ans)
    fold(_node("started", "tool", "Weather"), ans)
    fold(_node("finished", "tool", "Weather", "failed"), ans)
    fold(_node("started", "llm", "LLM"), ans)
    fold(_node("started", "start", "Start"), ans)  # not worth a step
    assert [(s.title, s.state) for s in ans.steps] == [
        ("Searching the knowledge base", "done"),
        ("Using tool: Weather", "failed"),
        ("Thinking", "running"),
    ]
    fold(WorkflowFinished(event="workflow_finished", status="succeeded"), ans)
    assert ans.steps[-1].state == "done"


def test_an_agent_tool_call_is_one_step_updated_as_dify_fills_it_in() -> None:
    ans = Answer()
    for obs in ("", "sunny"):
        fold(
            AgentThought(
                event="agent_thought",
                id="t1",
                position=1,
                thought="",
                tool="weather;clock",
                tool_input='{"city": "Oslo"}',
                observation=obs,
            ),
            ans,
        )
    (step,) = ans.steps
    assert step == Step("thought-t1", "Using weather, clock", "done", '{"city": "Oslo"}', "sunny")
    fold(
        AgentThought(
            event="agent_thought",
            id="t2",
            position=2,
            thought="hm",
            tool="search",
            tool_input="x" * 500,
            observation="",
        ),
        ans,
    )
    assert ans.steps[1].state == "running" and len(ans.steps[1].detail) == 200
    fold(MessageEnd(event="message_end"), ans)
    assert {s.state for s in ans.steps} == {"done"}


def test_steps_become_slack_task_chunks() -> None:
    chunk = task_chunk(Step("node-llm", "Thinking", "running"))
    assert chunk == {
        "type": "task_update",
        "id": "node-llm",
        "title": "Thinking",
        "status": "in_progress",
    }
    assert task_chunk(Step("a", "b", "failed", "in", "out"))["status"] == "error"
    src = sources_chunk(
        [
            Source(1, "Policy", url="https://x.io/p"),
            Source(2, "Memo"),
            Source(3, "Bad", url="javascript:alert(1)"),
        ]
    )
    assert src is not None and src["sources"] == [
        {"type": "url", "url": "https://x.io/p", "text": "Policy"}
    ]
    assert sources_chunk([Source(1, "Memo")]) is None


def test_a_long_answer_is_cut_at_a_paragraph_never_before_what_was_sent() -> None:
    text = "a" * 100 + "\n\n" + "b" * 100 + "\n" + "c" * 100
    assert cut_point(text, 0, 250, 0) == 102  # after the paragraph break
    assert cut_point(text, 0, 250, 150) == 203  # the paragraph is sent: the line break
    assert cut_point(text, 0, 250, 210) == 250  # nothing to cut at: the hard limit
    assert PART_LIMIT < 12_000


def test_streamed_text_cannot_notify_anyone_and_stays_a_prefix() -> None:
    assert defuse("hi <!channel> and <@U1>") == "hi <\u200b!channel> and <\u200b@U1>"
    assert defuse("x <!here> y").startswith(defuse("x <!here"))
