"""The hand-written word lists that `generate.py` composes into documents.

Everything here was written for this project. Entries are tuples rather than dicts to keep the
lists compact; each list says what its fields are.
"""

FEMALE_NAMES = (
    "Ada", "Alma", "Anna", "Bea", "Cora", "Dora", "Edith", "Elsa", "Ena", "Fay", "Gemma", "Greta",
    "Hana", "Ida", "Ines", "Iris", "Jana", "June", "Kira", "Lena", "Lila", "Lina", "Mara", "Mina",
    "Nell", "Nina", "Nora", "Olga", "Opal", "Pia", "Rosa", "Ruth", "Sara", "Tess", "Una", "Vera",
    "Wren", "Yara", "Zoe", "Maya",
)
MALE_NAMES = (
    "Abel", "Alan", "Amos", "Ben", "Boris", "Carl", "Dan", "Eli", "Emil", "Finn", "Gus", "Hugo",
    "Ivan", "Jack", "Jon", "Karl", "Leo", "Liam", "Max", "Milo", "Ned", "Nils", "Otto", "Owen",
    "Paul", "Rafe", "Rex", "Sam", "Saul", "Tim", "Tom", "Ugo", "Vic", "Walt", "Yan", "Zeke",
    "Omar", "Ravi", "Tobias", "Felix",
)
# subject, object, possessive
PRONOUNS = {"f": ("she", "her", "her"), "m": ("he", "him", "his")}

# Town names are built from two halves, so there are many of them and the tokenizer has to learn
# the pieces rather than whole names.
TOWN_HEADS = (
    "Oak", "Stone", "Mill", "River", "Elm", "Ash", "Fern", "Red", "Green", "Salt", "Wind", "Frost",
    "Clay", "Pine", "Brook", "Hollow", "Birch", "Fox", "Crow", "Long", "Bright", "Cold", "High",
    "Low", "West", "East", "North", "South", "Amber", "Willow",
)
TOWN_TAILS = (
    "ford", "ridge", "field", "wick", "haven", "dale", "moor", "bury", "ton", "well", "mere",
    "gate", "brook", "stead", "cliff", "hill", "wood", "port",
)
RIVERS = ("Lune", "Aven", "Tarn", "Isel", "Corra", "Mell", "Seld", "Varn", "Oska", "Brin")

# trade, workplace, what they do (3rd person singular), what they make (plural), a tool
TRADES = (
    ("baker", "bakery", "bakes bread and small cakes", "loaves", "oven"),
    ("potter", "workshop", "shapes bowls and jugs from clay", "bowls", "wheel"),
    ("smith", "forge", "hammers iron into nails and hinges", "nails", "hammer"),
    ("weaver", "loom house", "weaves wool into warm cloth", "blankets", "loom"),
    ("fisher", "harbour", "catches fish in the cold water", "nets", "boat"),
    ("farmer", "farm", "grows wheat, beans and turnips", "sacks of grain", "plough"),
    ("carpenter", "yard", "builds tables, chairs and doors", "chairs", "saw"),
    ("miller", "mill", "grinds wheat into fine flour", "bags of flour", "millstone"),
    ("tailor", "shop", "sews coats and mends torn shirts", "coats", "needle"),
    ("teacher", "school", "teaches children to read and count", "lessons", "chalk"),
    ("doctor", "clinic", "looks after people who are ill", "visits", "bag"),
    ("gardener", "garden", "plants flowers and trims hedges", "flower beds", "spade"),
    ("shepherd", "hills", "watches over a flock of sheep", "fleeces", "crook"),
    ("beekeeper", "orchard", "keeps bees and collects honey", "jars of honey", "smoker"),
    ("cook", "inn", "makes soup and stew for travellers", "pots of soup", "ladle"),
    ("cobbler", "stall", "makes and repairs leather shoes", "pairs of shoes", "awl"),
    ("painter", "studio", "paints pictures of the valley", "paintings", "brush"),
    ("builder", "building site", "lays bricks and builds walls", "walls", "trowel"),
    ("postman", "post office", "carries letters from house to house", "letters", "satchel"),
    ("librarian", "library", "looks after books and helps readers", "catalogues", "ledger"),
)

# singular, plural, size, coat, home, food, what it does (3rd person singular / plural)
ANIMALS = (
    ("fox", "foxes", "small", "red fur", "the forest", "mice and berries", "barks", "bark"),
    ("owl", "owls", "small", "soft brown feathers", "old trees", "mice and beetles", "hoots", "hoot"),
    ("horse", "horses", "large", "a smooth coat", "the meadow", "grass and oats", "neighs", "neigh"),
    ("goat", "goats", "medium", "rough hair", "the hills", "leaves and grass", "bleats", "bleat"),
    ("duck", "ducks", "small", "waterproof feathers", "the pond", "weeds and snails", "quacks",
     "quack"),
    ("bear", "bears", "large", "thick dark fur", "the mountains", "fish, roots and honey",
     "growls", "growl"),
    ("rabbit", "rabbits", "small", "soft grey fur", "burrows in the field", "clover and carrots",
     "thumps", "thump"),
    ("cow", "cows", "large", "a patched hide", "the pasture", "grass and hay", "moos", "moo"),
    ("hedgehog", "hedgehogs", "tiny", "sharp spines", "hedges and gardens", "worms and slugs",
     "snuffles", "snuffle"),
    ("heron", "herons", "tall", "long grey feathers", "the river bank", "fish and frogs",
     "croaks", "croak"),
    ("squirrel", "squirrels", "small", "a bushy tail", "tall trees", "nuts and seeds",
     "chatters", "chatter"),
    ("frog", "frogs", "tiny", "smooth green skin", "the marsh", "flies and insects", "croaks",
     "croak"),
    ("wolf", "wolves", "large", "thick grey fur", "the far woods", "deer and hares", "howls",
     "howl"),
    ("sheep", "sheep", "medium", "curly wool", "the hillside", "grass and clover", "bleats",
     "bleat"),
    ("mouse", "mice", "tiny", "short brown fur", "holes in the wall", "seeds and crumbs",
     "squeaks", "squeak"),
    ("goose", "geese", "medium", "white feathers", "the lake shore", "grass and grain", "honks",
     "honk"),
    ("deer", "deer", "large", "a tawny coat", "the woodland", "leaves and acorns", "snorts",
     "snort"),
    ("crow", "crows", "small", "glossy black feathers", "the rooftops", "almost anything",
     "caws", "caw"),
    ("otter", "otters", "medium", "sleek wet fur", "the stream", "fish and crabs", "whistles",
     "whistle"),
    ("badger", "badgers", "medium", "black and white stripes", "a deep sett", "worms and roots",
     "grunts", "grunt"),
)
PETS = (("cat", "purred"), ("dog", "wagged its tail"), ("goat", "bleated"),
        ("parrot", "chattered"), ("tortoise", "blinked slowly"), ("hen", "clucked"))
PET_NAMES = ("Pip", "Biscuit", "Moss", "Pepper", "Socks", "Button", "Clover", "Dot", "Fig",
             "Juniper", "Pebble", "Tansy", "Rusk", "Nutmeg", "Bramble")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "grey", "brown", "orange",
           "purple", "pink", "golden")

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
# season, its months (indices into MONTHS), what happens then
SEASONS = (
    ("winter", (11, 0, 1), ("snow covers the roofs", "the ponds freeze over",
                            "people sit close to the fire", "the nights are long")),
    ("spring", (2, 3, 4), ("the first buds open", "lambs are born in the fields",
                           "the rain is soft and warm", "birds build their nests")),
    ("summer", (5, 6, 7), ("the days are long and bright", "children swim in the river",
                           "the wheat turns gold", "bees are busy in the flowers")),
    ("autumn", (8, 9, 10), ("the leaves turn red and brown", "apples are picked",
                            "the wind grows cold", "geese fly south")),
)
# weather, an adjective for the day, something people did because of it
WEATHER = (
    ("sunny", "bright", "hung washing out to dry"),
    ("rainy", "wet", "stayed indoors by the window"),
    ("windy", "wild", "held on to their hats"),
    ("foggy", "grey", "walked slowly along the lanes"),
    ("snowy", "white", "cleared the paths with shovels"),
    ("cloudy", "dull", "carried umbrellas just in case"),
    ("stormy", "dark", "closed their shutters early"),
    ("frosty", "crisp", "wore thick gloves"),
)

# goods sold at a market: singular, plural, price in coins
GOODS = (
    ("loaf of bread", "loaves of bread", 3), ("apple", "apples", 1), ("pear", "pears", 2),
    ("jar of honey", "jars of honey", 6), ("candle", "candles", 2), ("rope", "ropes", 5),
    ("cabbage", "cabbages", 2), ("bag of salt", "bags of salt", 4), ("wheel of cheese",
    "wheels of cheese", 9), ("bowl", "bowls", 4), ("pair of socks", "pairs of socks", 3),
    ("lantern", "lanterns", 8), ("basket", "baskets", 5), ("egg", "eggs", 1), ("fish", "fish", 3),
    ("sack of oats", "sacks of oats", 7), ("knife", "knives", 6), ("cup", "cups", 2),
    ("onion", "onions", 1), ("ball of wool", "balls of wool", 4),
)
# somewhere to go, and why
ERRANDS = (
    ("the mill", "to fetch flour"), ("the market", "to buy food for the week"),
    ("the river", "to fill the water jugs"), ("the library", "to return a book"),
    ("the forge", "to collect a new hinge"), ("the inn", "to meet an old friend"),
    ("the clinic", "to ask about a cough"), ("the hills", "to look for a lost goat"),
    ("the harbour", "to watch the boats come in"), ("the orchard", "to pick plums"),
    ("the post office", "to send a letter"), ("the school", "to help with the lessons"),
)
FEELINGS = ("happy", "tired", "proud", "curious", "worried", "calm", "cheerful", "hungry",
            "sleepy", "surprised")
TIMES = ("at dawn", "early in the morning", "before breakfast", "at noon", "after lunch",
         "in the afternoon", "at dusk", "in the evening")
BUILDINGS = ("bakery", "school", "inn", "mill", "chapel", "library", "forge", "bridge", "tower",
             "well", "barn", "market hall")

# --- Chinese: a tiny lexicon of common words ---
ZH_DIGITS = "零一二三四五六七八九"
ZH_NAMES = ("小明", "小红", "小华", "小兰", "小东", "小雨", "小林", "小文", "王老师", "李叔叔",
            "张阿姨", "刘爷爷", "陈奶奶", "马大哥")
# place, what one does there
ZH_PLACES = (("学校", "上课"), ("商店", "买东西"), ("公园", "散步"), ("河边", "钓鱼"),
             ("山上", "看风景"), ("市场", "买菜"), ("图书馆", "看书"), ("医院", "看病"),
             ("朋友家", "玩"), ("饭馆", "吃饭"))
# season, what happens then, the weather it can have
ZH_SEASONS = (
    ("春天", "花开了", ("天气很好", "下雨了", "多云", "刮风了")),
    ("夏天", "白天很长", ("天气很热", "下雨了", "天气很好", "多云")),
    ("秋天", "树叶黄了", ("天气很好", "刮风了", "多云", "有雾")),
    ("冬天", "河水结冰了", ("下雪了", "天气很冷", "刮风了", "有雾")),
)
# animal, its measure word
ZH_ANIMALS = (("猫", "只"), ("狗", "只"), ("鸟", "只"), ("鱼", "条"), ("马", "匹"), ("牛", "头"),
              ("羊", "只"), ("鸭子", "只"))
ZH_FOODS = ("苹果", "鸡蛋", "西瓜", "包子", "馒头", "桃子", "梨", "橘子")
ZH_COLOURS = ("红", "黄", "蓝", "绿", "白", "黑")
ZH_DAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
ZH_TIMES = ("早上", "上午", "中午", "下午", "晚上")
ZH_FEELINGS = ("很高兴", "很累", "很开心", "有点饿", "很满意")
