"""The behaviour prompts under the real Qwen3 tokenizer (built offline by `llm_biology.qwen_tokenizers.qwen3_tokenizer`).

The first run downloads one PyPI wheel and builds the tokenizer (seconds); later runs load it from the
cache. Without access to PyPI every test here is skipped with the reason.
"""
import pytest

from llm_biology.core import BEHAVIOURS
from llm_biology.models import answer_tokens
from llm_biology.prompts import CAPITALS, generate_prompts, prompt_pool
from llm_biology.qwen_tokenizers import TokenizerUnavailable, qwen3_tokenizer


@pytest.fixture(scope="module")
def tok():
    try: return qwen3_tokenizer()
    except TokenizerUnavailable as e: pytest.skip(str(e))


@pytest.fixture(scope="module")
def splits(tok):
    return {b: generate_prompts(b, tok) for b in BEHAVIOURS}


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def records(splits, behaviour):
    return splits[behaviour].train + splits[behaviour].test


def test_default_sizes(splits):
    sizes = {b: (len(s.train), len(s.test)) for b, s in splits.items()}
    # factual_recall's pool holds 15 countries x 4 templates: 45 train, 15 test
    assert sizes == {"grammar_agreement": (80, 20), "factual_recall": (45, 15),
                     "sentiment_continuation": (80, 20), "arithmetic": (80, 20)}


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_every_answer_pair_has_a_first_differing_token(tok, splits, behaviour):
    for r in records(splits, behaviour):
        at = answer_tokens(tok, r.prompt, r.correct_answer, r.incorrect_answer)
        c, w = ids(tok, r.correct_answer), ids(tok, r.incorrect_answer)
        k = len(at.shared_prefix)
        assert c[:k] == w[:k] == at.shared_prefix and (at.correct_id, at.incorrect_id) == (c[k], w[k])
        assert at.correct_id != at.incorrect_id
        assert at.prompt_ids == [tok.convert_tokens_to_ids("<|endoftext|>")] + ids(tok, r.prompt)


def test_arithmetic_answers_are_a_space_then_one_token_per_digit(tok, splits):
    space = ids(tok, " ")
    assert space == [220]
    for r in records(splits, "arithmetic"):
        for answer in (r.correct_answer, r.incorrect_answer):
            assert ids(tok, answer) == space + [ids(tok, d)[0] for d in answer.strip()]
            assert len(ids(tok, answer)) == (4 if int(answer) >= 100 else 3)
        at = answer_tokens(tok, r.prompt, r.correct_answer, r.incorrect_answer)
        a, b = r.correct_answer.strip(), r.incorrect_answer.strip()
        common = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert at.shared_prefix == space + [ids(tok, d)[0] for d in a[:common]]
    assert {len(ids(tok, r.correct_answer)) for r in records(splits, "arithmetic")} == {3, 4}


def test_arithmetic_shared_prefix_examples(tok):
    at = answer_tokens(tok, "12 + 44 =", " 56", " 66")
    assert at.shared_prefix == [220]
    assert tok.convert_ids_to_tokens([at.correct_id, at.incorrect_id]) == ["5", "6"]
    at = answer_tokens(tok, "12 + 45 =", " 57", " 58")
    assert tok.convert_ids_to_tokens(at.shared_prefix + [at.correct_id, at.incorrect_id]) == ["Ġ", "5", "7", "8"]
    at = answer_tokens(tok, "55 + 47 =", " 102", " 92")
    assert at.shared_prefix == [220] and tok.convert_ids_to_tokens([at.correct_id, at.incorrect_id]) == ["1", "9"]


def test_factual_distractors_are_length_matched(tok, splits):
    n = lambda s: len(ids(tok, s))
    wrong = {capital: [f" {w}" for w in ws] for _, capital, ws in CAPITALS}
    pool = prompt_pool("factual_recall", tok)
    for r in pool.train + pool.test:
        cands = wrong[r.meta["capital"]]
        assert r.meta["length_diff"] == abs(n(r.correct_answer) - n(r.incorrect_answer))
        assert r.meta["length_diff"] == min(abs(n(r.correct_answer) - n(w)) for w in cands)
    by_capital = {r.meta["capital"]: r for r in records(splits, "factual_recall")}
    assert (by_capital["Brasilia"].incorrect_answer, by_capital["Brasilia"].meta["length_diff"]) == (" Sao Paulo", 0)
    assert by_capital["New Delhi"].meta["length_diff"] == 1  # every distractor is one token, " New Delhi" two


def test_common_grammar_and_sentiment_answers_are_single_tokens(tok, splits):
    for word in (" is", " are", " was", " were", " has", " have", " great", " terrible"):
        assert len(ids(tok, word)) == 1, word
    for b in ("grammar_agreement", "sentiment_continuation"):
        for r in records(splits, b):
            assert len(ids(tok, r.correct_answer)) == len(ids(tok, r.incorrect_answer)) == 1, r
