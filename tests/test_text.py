import pytest

from lib import text

# Hand-tagged code-switched sentences: the tagger's accuracy on these is pinned below.
GOLD = [
    ("Chiều nay em gửi report cho manager nhé", "vi vi vi vi en vi en vi"),
    ("Em đi to the office lúc 9 giờ", "vi vi en en en vi x vi"),
    ("Anh check email giúp em với", "vi en en vi vi vi"),
    ("deadline là thứ sáu, OK không anh?", "en vi vi vi en vi vi"),
    ("Team mình cần finish cái slide này before Monday", "en vi vi en vi en vi en en"),
    ("I love you", "en en en"),
    ("Cái laptop này to quá", "vi en vi vi vi"),
    ("em cần book một cái phòng họp cho team", "vi vi en vi vi vi vi vi en"),
    ("Hôm nay trời đẹp quá", "vi vi vi vi vi"),
    ("AI sẽ thay đổi ngành này", "en vi vi vi vi vi"),
    ("bạn có thể update cái app được không", "vi vi vi en vi en vi vi"),
    ("Sếp bảo mình làm overtime, can you believe it?", "vi vi vi vi en en en en en"),
    ("Con mèo ăn cá", "vi vi vi vi"),
    ("Cho em một cái bill nha", "vi vi vi vi en vi"),
    ("Video này viral trên TikTok rồi", "en vi en vi en vi"),
]


def test_nfc_and_scoring_normalization():
    decomposed = "Vie\u0323\u0302t"  # "Việt" typed with combining marks
    assert text.nfc(decomposed) == "Việt"
    assert text.normalize_for_scoring(f'{decomposed} Nam: "Report", e-mail... don\'t!') == "việt nam report e mail dont"
    assert text.normalize_for_scoring("Giá 3,5 triệu, tức 3.500.000 đồng.") == "giá 3,5 triệu tức 3.500.000 đồng"
    assert text.normalize_for_scoring("ĐÀ NẴNG") == "đà nẵng"  # lowercase keeps the diacritics


@pytest.mark.parametrize("word, valid", [
    ("nghiêng", True), ("quyết", True), ("gì", True), ("khuỷu", True), ("Việt", True), ("anh", True),
    ("chat", False),  # a stop final needs the sắc or nặng tone: "chát" is Vietnamese, "chat" is not
    ("chát", True), ("meeting", False), ("deadline", False), ("fan", False), ("wifi", False), ("zoom", False),
])
def test_vietnamese_syllable_check(word, valid):
    assert text.is_vietnamese_syllable(word) is valid


def test_tagger_on_hand_tagged_sentences():
    pairs = [(t, g) for sentence, gold in GOLD for t, g in zip(text.tag_transcript(sentence), gold.split())]
    correct = sum(t == g for t, g in pairs)
    assert len(pairs) == 99
    assert correct / len(pairs) >= 0.95, [(s, text.tag_transcript(s)) for s, _ in GOLD]


def test_tagger_edge_tokens():
    assert text.tag_words(["9", "10%", "...", "4G", "COVID-19"]) == ["x", "x", "x", "x", "x"]
    assert text.tag_words([]) == []


def test_code_mixing_index():
    assert text.code_mixing_index(["vi", "vi", "vi"]) == 0.0
    assert text.code_mixing_index(["vi", "en"]) == 50.0
    assert text.code_mixing_index(["vi", "vi", "vi", "en", "x"]) == pytest.approx(25.0)
    assert text.code_mixing_index(["x", "x"]) == 0.0
